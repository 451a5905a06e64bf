"""A new user's first hour, for real: a clean venv with only `pip install <feature_layer>`
(no extras), a dbt project written from scratch outside the repository (two entities, one
with a composite key, three views, an ML exposure), then `dbt build`, `feature-layer
validate`, `materialize`, `online-get` and a training set, each checked against values
computed here by brute force from the seed rows.

Speed: the dependencies' wheels are built once into a wheelhouse keyed by the declared
dependencies and requirements.lock (``$FEATURE_LAYER_WHEELHOUSE`` or
``~/.cache/feature_layer/wheelhouse-<key>``; filling it needs PyPI once). Every run then
builds feature_layer's own wheel from the current source and installs it into a new venv
with ``pip install --no-index --find-links <wheelhouse>``: the venv gets exactly what
feature_layer declares, no more. If the venv cannot be built the test fails, saying why.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOW = "2025-03-01T00:00:00+00:00"

CUSTOMERS = """customer_id,signed_up_at,segment
1,2025-01-01 00:00:00,gold
2,2025-01-05 00:00:00,silver
3,2025-01-10 00:00:00,gold
"""
ORDERS = """order_id,customer_id,store_id,ordered_at,amount
1,1,10,2025-02-01 10:00:00,20.0
2,1,10,2025-02-03 10:00:00,30.0
3,1,11,2025-02-04 10:00:00,5.5
4,2,10,2025-02-02 09:00:00,12.0
5,2,10,2025-02-10 09:00:00,8.0
6,3,11,2025-02-05 12:00:00,100.0
"""
PROJECT_FILES = {
    "dbt_project.yml": """name: shop
version: "1.0.0"
config-version: 2
profile: shop
vars:
  feature_layer:
    entities:
      customer:
        join_keys: [customer_id]
        description: A customer
      customer_store:
        join_keys: [customer_id, store_id]
        description: A customer buying at one store
seeds:
  shop:
    +column_types: {customer_id: bigint, store_id: bigint, order_id: bigint, amount: double,
                    ordered_at: timestamp, signed_up_at: timestamp, segment: varchar}
models:
  shop:
    +materialized: table
""",
    "profiles.yml": """shop:
  target: dev
  outputs:
    dev: {type: duckdb, path: target/shop.duckdb, threads: 1}
""",
    "seeds/customers.csv": CUSTOMERS,
    "seeds/orders.csv": ORDERS,
    "models/customer_order_features.sql": """select
    customer_id,
    ordered_at,
    count(*) over w as orders_so_far,
    sum(amount) over w as spend_so_far
from {{ ref('orders') }}
window w as (partition by customer_id order by ordered_at rows between unbounded preceding and current row)
""",
    "models/customer_profile_features.sql": """select customer_id, signed_up_at, segment, segment = 'gold' as is_gold
from {{ ref('customers') }}
""",
    "models/customer_store_features.sql": """select
    customer_id,
    store_id,
    ordered_at,
    count(*) over w as visits_so_far,
    amount as last_amount
from {{ ref('orders') }}
window w as (partition by customer_id, store_id order by ordered_at
             rows between unbounded preceding and current row)
""",
    "models/schema.yml": """version: 2
models:
  - name: customer_order_features
    config:
      meta:
        feature_layer: {entities: [customer], event_time: ordered_at, ttl: 3650d, owner: growth@example.com}
    columns:
      - {name: customer_id, data_type: bigint}
      - {name: ordered_at, data_type: timestamp}
      - {name: orders_so_far, data_type: bigint}
      - {name: spend_so_far, data_type: double}
  - name: customer_profile_features
    config:
      meta:
        feature_layer: {entities: [customer], event_time: signed_up_at}
    columns:
      - {name: customer_id, data_type: bigint}
      - {name: signed_up_at, data_type: timestamp}
      - {name: segment, data_type: varchar}
      - {name: is_gold, data_type: boolean}
  - name: customer_store_features
    config:
      meta:
        feature_layer: {entities: [customer_store], event_time: ordered_at}
    columns:
      - {name: customer_id, data_type: bigint}
      - {name: store_id, data_type: bigint}
      - {name: ordered_at, data_type: timestamp}
      - {name: visits_so_far, data_type: bigint}
      - {name: last_amount, data_type: double}
exposures:
  - name: churn_model
    type: ml
    owner: {name: Growth, email: growth@example.com}
    depends_on: [ref('customer_order_features'), ref('customer_profile_features'), ref('customer_store_features')]
    config:
      meta:
        feature_layer:
          features:
            - customer_order_features.orders_so_far
            - customer_order_features.spend_so_far
            - customer_profile_features.is_gold
            - customer_store_features.visits_so_far
            - customer_store_features.last_amount
""",
}
TRAINING_SCRIPT = """
import json, sys
from datetime import datetime
import pyarrow as pa
import feature_layer
from feature_layer import FeatureStore
from feature_layer.extras import MissingExtraError

rows = json.loads(sys.argv[1])
entity = pa.table({
    "customer_id": pa.array([r[0] for r in rows], pa.int64()),
    "store_id": pa.array([r[1] for r in rows], pa.int64()),
    "event_timestamp": pa.array([datetime.fromisoformat(r[2]) for r in rows], pa.timestamp("us")),
})
with FeatureStore(".") as store:
    training = store.get_training_set(entity, service="churn_model")
    table = training.to_arrow()
    try:
        training.to_pandas()
        pandas_error = None
    except MissingExtraError as exc:
        pandas_error = str(exc)
print(json.dumps({"rows": table.to_pylist(), "pandas_error": pandas_error, "package": feature_layer.__file__},
                 default=str))
"""


# -- the clean venv ----------------------------------------------------------------------


def _fail(what: str, done: subprocess.CompletedProcess[str] | None = None, hint: str = "") -> None:
    output = f"\n{done.stdout}\n{done.stderr}" if done is not None else ""
    pytest.fail(f"Could not build the clean venv: {what}.{output}\n{hint}", pytrace=False)


def _run(args: list[str], what: str, hint: str = "", **kwargs: object) -> None:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        _fail(what, done, hint)


def _wheelhouse_key() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = json.dumps([pyproject["build-system"]["requires"], pyproject["project"]["dependencies"]])
    return hashlib.sha256((declared + (REPO / "requirements.lock").read_text()).encode()).hexdigest()[:16]


def _copy_source(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "feature_layer", dest / "feature_layer", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _wheelhouse(source: Path) -> Path:
    """The dependencies' wheels, built once per dependency set (under a lock: other test
    runs on the machine may fill it at the same time)."""
    root = Path(os.environ.get("FEATURE_LAYER_WHEELHOUSE") or Path.home() / ".cache" / "feature_layer")
    house = root / f"wheelhouse-{_wheelhouse_key()}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (house / ".complete").exists():
            return house
        partial = root / f".{house.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build_requires = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]["requires"]
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial),
              "-c", str(REPO / "requirements.lock"), *build_requires, str(source)],
             "filling the wheelhouse with `pip wheel` failed",
             "It needs PyPI once (then the wheels are reused offline); check the network or set "
             "FEATURE_LAYER_WHEELHOUSE to a folder of wheels.")
        for own in partial.glob("feature_layer-*.whl"):
            own.unlink()  # built fresh from the current source on every run
        (partial / ".complete").touch()
        shutil.rmtree(house, ignore_errors=True)
        partial.rename(house)
    return house


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("clean_install")
    source = _copy_source(base / "source")
    house = _wheelhouse(source)
    wheels = base / "wheel"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--find-links", str(house),
          "--wheel-dir", str(wheels), str(source)], "building feature_layer's wheel from the source failed")
    (wheel,) = wheels.glob("feature_layer-*.whl")
    venv = base / "venv"
    # No pip inside: this run's pip installs into it (`--python`), saving ensurepip's time.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "`python -m venv` failed",
         "On Debian: apt-get install python3-venv.")
    # --no-compile: byte-compiling all of dbt takes longer than the few modules the commands import.
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-compile",
          "--no-index", "--find-links", str(house), str(wheel)],
         "`pip install feature_layer` (no extras) into the clean venv failed",
         f"The wheelhouse {house} may be incomplete: delete it to rebuild.", env=_clean_env(venv))
    return venv


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FEATURE_LAYER_", "DBT_", "PYTHON", "VIRTUAL_ENV", "PIP_FIND_LINKS"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["FEATURE_LAYER_NOW"] = NOW
    return env


# -- the project and the brute-force reference -------------------------------------------------


def _write_project(root: Path) -> Path:
    for name, text in PROJECT_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _orders() -> list[dict[str, object]]:
    return [{"customer_id": int(r["customer_id"]), "store_id": int(r["store_id"]),
             "at": datetime.fromisoformat(r["ordered_at"]), "amount": float(r["amount"])}
            for r in csv.DictReader(io.StringIO(ORDERS))]


def _segments() -> dict[int, tuple[datetime, str]]:
    return {int(r["customer_id"]): (datetime.fromisoformat(r["signed_up_at"]), r["segment"])
            for r in csv.DictReader(io.StringIO(CUSTOMERS))}


def _expected(customer: int, store: int, at: datetime) -> dict[str, object]:
    """Every feature of churn_model as of ``at``, from the seed rows (no SQL)."""
    mine = [o for o in _orders() if o["customer_id"] == customer and o["at"] <= at]
    here = sorted((o for o in mine if o["store_id"] == store), key=lambda o: o["at"])
    signed_up, segment = _segments()[customer]
    return {
        "orders_so_far": len(mine) or None,
        "spend_so_far": sum(o["amount"] for o in mine) if mine else None,
        "is_gold": segment == "gold" if signed_up <= at else None,
        "visits_so_far": len(here) or None,
        "last_amount": here[-1]["amount"] if here else None,
    }


def _cli(venv: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(venv / "bin" / "feature-layer"), *args], cwd=project, capture_output=True, text=True,
                          env=_clean_env(venv))
    assert done.returncode == 0, f"feature-layer {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_a_new_dbt_project_works_end_to_end_with_only_pip_install(clean_venv: Path, tmp_path: Path) -> None:
    venv = clean_venv
    no_pandas = subprocess.run([str(venv / "bin" / "python"), "-c", "import pandas"], capture_output=True,
                               env=_clean_env(venv))
    assert no_pandas.returncode != 0, "the clean venv must not have pandas (no extras were installed)"
    project = _write_project(tmp_path / "shop")

    built = subprocess.run([str(venv / "bin" / "dbt"), "build", "--profiles-dir", "."], cwd=project,
                           capture_output=True, text=True, env=_clean_env(venv))
    assert built.returncode == 0, built.stdout + built.stderr

    validated = _cli(venv, project, "validate")
    assert validated.stdout.startswith("OK: 2 ") and "3 feature views" in validated.stdout
    assert "Warning" not in validated.stderr

    _cli(venv, project, "materialize", "--no-progress", "--end", NOW)
    online = json.loads(_cli(venv, project, "online-get", "--service", "churn_model", "-e", "customer_id=1",
                             "-e", "store_id=10", "--json").stdout)
    expected_now = _expected(1, 10, datetime.fromisoformat(NOW).replace(tzinfo=None))
    assert all(v is not None for v in expected_now.values())
    assert online == [{"customer_id": 1, "store_id": 10, **expected_now}]

    entity_rows = [(1, 10, "2025-02-03 12:00:00"), (2, 10, "2025-02-05 00:00:00"), (3, 11, "2025-01-20 00:00:00")]
    done = subprocess.run([str(venv / "bin" / "python"), "-c", TRAINING_SCRIPT, json.dumps(entity_rows)], cwd=project,
                          capture_output=True, text=True, env=_clean_env(venv))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).is_relative_to(venv), result["package"]  # the installed copy, not the repo
    assert "pip install 'feature_layer[pandas]'" in result["pandas_error"]
    assert len(result["rows"]) == len(entity_rows)
    for (customer, store, at), got in zip(entity_rows, result["rows"], strict=True):
        assert (got["customer_id"], got["store_id"]) == (customer, store)
        want = _expected(customer, store, datetime.fromisoformat(at))
        assert {k: got[k] for k in want} == want, (customer, store, at)
    assert any(v is not None for row in result["rows"] for v in row.values())
