"""Registry-load benchmark: a generated 5,000-model dbt project, parsed by real dbt.

Reports the time to build the Registry next to a plain ``json.load`` of the same
manifest, measured in the same run (ratios survive a noisy machine).

    python -m benchmarks.registry_load [--models 5000] [--out bench_out/registry]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from benchmarks.common import best_and_median, markdown_table


def write_project(root: Path, models: int) -> None:
    """A project of ``models`` models: chains of staging models under feature views."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(textwrap.dedent("""\
        name: bench_registry
        version: "1.0"
        config-version: 2
        profile: bench_registry
        vars:
          feature_layer:
            entities:
              user: {join_keys: [user_id], description: A user}
              merchant: {join_keys: [merchant_id], description: A merchant}
    """))
    (root / "profiles.yml").write_text("bench_registry:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: ':memory:'\n")
    schema = ["version: 2", "models:"]
    for i in range(models):
        name = f"m{i:05d}"
        if i % 5 == 0:
            sql = "select 1::bigint as user_id, now()::timestamp as ts, 1.0 as a, 2 as b, 'x' as c"
        else:
            sql = f"select * from {{{{ ref('m{i - 1:05d}') }}}}"
        (root / "models" / f"{name}.sql").write_text(sql + "\n")
        if i % 5 == 4:  # the last model of each chain is a feature view
            entity = "user"
            schema += [
                f"  - name: {name}",
                f"    description: Feature view number {i} about user spending and velocity",
                "    config:",
                "      meta:",
                f"        feature_layer: {{entities: [{entity}], event_time: ts, ttl: 30d, owner: team{i % 7}@example.com, tags: [t{i % 11}]}}",
                "    columns:",
                "      - {name: user_id, data_type: bigint}",
                "      - {name: ts, data_type: timestamp}",
                "      - {name: a, data_type: double, description: amount feature}",
                "      - {name: b, data_type: integer, description: count feature}",
                "      - {name: c, data_type: varchar, description: category feature}",
            ]
    (root / "models" / "schema.yml").write_text("\n".join(schema) + "\n")


def ensure_manifest(root: Path, models: int) -> Path:
    manifest = root / "target" / "manifest.json"
    if manifest.exists():
        return manifest
    write_project(root, models)
    dbt = Path(sys.executable).parent / "dbt"
    subprocess.run([str(dbt), "parse", "--project-dir", str(root), "--profiles-dir", str(root), "--quiet"],
                   check=True, cwd=root)
    return manifest


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=Path("bench_out/registry"), help="Where the generated project goes.")
    parser.add_argument("--out", type=Path, default=None, help="Write the markdown report here too.")
    args = parser.parse_args(argv)
    root = (args.work / f"{args.models}_models").resolve()
    manifest = ensure_manifest(root, args.models)

    from feature_layer.config import load_settings
    from feature_layer.registry.registry import Registry

    settings = load_settings(root)

    def plain_json() -> None:
        with open(manifest, "rb") as fh:
            json.load(fh)

    def registry_load() -> None:
        Registry.load(settings)

    registry = Registry.load(settings)
    json_best, json_median = best_and_median(plain_json)
    reg_best, reg_median = best_and_median(registry_load)
    size_mb = manifest.stat().st_size / 1e6
    table = markdown_table(
        ["step", "best (s)", "median (s)", "ratio to json.load (median)"],
        [
            ["plain `json.load` of manifest.json", f"{json_best:.3f}", f"{json_median:.3f}", "1.00"],
            ["`Registry.load` (read + parse + validate every declaration)", f"{reg_best:.3f}", f"{reg_median:.3f}",
             f"{reg_median / json_median:.2f}"],
        ],
    )
    summary = registry.summary()
    text = (f"Manifest: {summary['models']} models, {summary['feature_views']} feature views, "
            f"{summary['features']} features, {size_mb:.1f} MB.\n\n{table}\n")
    print(text)
    if args.out:
        import datetime
        import platform

        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        args.out.write_text(
            f"## Registry load (issue 2)\n\n`python -m benchmarks.registry_load --models {args.models}` — {stamp}, "
            f"{platform.python_version()}, best and median of 7 runs each (after a warm-up), in one process. The project "
            "is generated and parsed by real `dbt parse` once (cached under bench_out/).\n\n" + text)
    return text


if __name__ == "__main__":
    main()
