"""Search-latency benchmark: every-object search over a generated registry of 10,000 features.

Reports the index build time (paid once per registry load, off the request path) and, per
query, the median and worst latency of ``feature_layer.registry.search.search_objects`` with
the per-word candidate cache emptied before every run (each run is a cold query), and of the
full HTTP round trip of ``GET /v1/search`` (in-process ASGI client). The floor, timed
interleaved with it (A B A B …), is the simplest search there is: one ``in`` test of the
first query word against each object's concatenated, lower-cased text (no ranking, no typos).

    python -m benchmarks.search [--features 10000] [--repeat 50] [--out docs/bench_search.md]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from benchmarks.common import markdown_table
from feature_layer.registry.model import Entity, Feature, FeatureView, Relation
from feature_layer.registry.search import SearchIndex, index_for, search_objects

ADJECTIVES = ["amount", "count", "avg", "max", "min", "ratio", "share", "velocity", "distinct", "first"]
SUBJECTS = ["txn", "merchant", "card", "device", "login", "chargeback", "refund", "country", "ip", "email"]
WINDOWS = ["1h", "24h", "7d", "30d", "90d"]
QUERIES = ["amount", "txn count", "chargeback 30d", "merchant", "velocity", "refund_ratio_90d", "zzz", "of", "team3",
           "card avg 7d user", "team", "chargebak", "velocty ammount", "merchnt refnd 30d", "the events of"]


@dataclass
class GeneratedRegistry:
    entities: dict[str, Entity]
    views: dict[str, FeatureView]
    services: dict[str, object]
    nodes: dict[str, object]


def generated_registry(n_features: int = 10_000, per_view: int = 25) -> GeneratedRegistry:
    """``n_features`` features in views of ``per_view``, with realistic names, tags, owners and text."""
    entity_names = ["user", "merchant", "card", "device"]
    views: dict[str, FeatureView] = {}
    i = v = 0
    while i < n_features:
        entity = entity_names[v % len(entity_names)]
        name = f"{entity}_{SUBJECTS[v % len(SUBJECTS)]}_features_{v}"
        features = []
        for _ in range(min(per_view, n_features - i)):
            adj, subj = ADJECTIVES[i % len(ADJECTIVES)], SUBJECTS[(i // 10) % len(SUBJECTS)]
            window = WINDOWS[(i // 100) % len(WINDOWS)]
            features.append(Feature(
                name=f"{subj}_{adj}_{window}_{i}", view=name, dtype="float64",
                description=f"The {adj} of {subj} events per {entity} over the last {window}.",
                tags=(subj, f"team{i % 7}"),
            ))
            i += 1
        views[name] = FeatureView(
            name=name, unique_id=f"model.gen.{name}", entities=(entity,), join_keys=(f"{entity}_id",),
            event_time="ts", features=tuple(features), relation=Relation(None, "main", name),
            ttl=timedelta(days=1), owner=f"team{v % 5}@example.com", tags=("generated",),
            description=f"Generated view {v}.",
        )
        v += 1
    entities = {e: Entity(e, (f"{e}_id",), f"A {e}.") for e in entity_names}
    return GeneratedRegistry(entities, views, {}, {})


def _floor_texts(registry: GeneratedRegistry) -> list[str]:
    texts = []
    for view in registry.views.values():
        texts.append(" ".join([view.name, view.description, view.owner or "", *view.tags]).lower())
        texts.extend(" ".join([f.name, f.description, *f.tags, view.name, view.owner or ""]).lower()
                     for f in view.features)
    texts.extend(f"{e.name} {e.description}".lower() for e in registry.entities.values())
    return texts


def time_queries(registry: GeneratedRegistry, repeat: int) -> list[tuple[str, int, float, float, float, float]]:
    """Per query: hits, median, p99 and max ms of ours; median ms of the floor (interleaved)."""
    index = index_for(registry)
    texts = _floor_texts(registry)
    rows = []
    for query in QUERIES:
        ours, floor = [], []
        total = 0
        word = query.split()[0]
        for _ in range(repeat):
            index.clear_caches()  # a cold query: no word seen before
            start = time.perf_counter()
            result = search_objects(registry, query)
            ours.append(time.perf_counter() - start)
            total = len(result.results)
            start = time.perf_counter()
            _ = [t for t in texts if word in t]
            floor.append(time.perf_counter() - start)
        ours.sort()
        rows.append((query, total, statistics.median(ours) * 1000, ours[int(0.99 * (len(ours) - 1))] * 1000,
                     ours[-1] * 1000, statistics.median(floor) * 1000))
    return rows


def time_http(registry: GeneratedRegistry, repeat: int) -> list[tuple[str, float, float]]:
    """``GET /v1/search?q=`` through the real app (in-process; no sockets)."""
    from starlette.testclient import TestClient

    from feature_layer.parts import Parts
    from feature_layer.server.app import build_app
    from feature_layer.server.reload import RegistryHolder

    holder = RegistryHolder(lambda: registry, [], initial=registry)
    app = build_app(Parts.of(registry=registry), holder, reload_interval=None)  # search needs no store
    rows = []
    with TestClient(app) as client:
        for query in QUERIES:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                index_for(registry).clear_caches()
                response = client.get("/v1/search", params={"q": query})
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
            times.sort()
            rows.append((query, statistics.median(times) * 1000, times[-1] * 1000))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="Write the markdown report here too.")
    args = parser.parse_args()

    registry = generated_registry(args.features)
    start = time.perf_counter()
    SearchIndex(registry)
    build_ms = (time.perf_counter() - start) * 1000
    index_for(registry)
    gc.collect()
    rows = time_queries(registry, args.repeat)
    http = time_http(registry, max(10, args.repeat // 5))
    worst = max(r[4] for r in rows)
    report = [
        f"### Search over {args.features:,} features (every object kind)",
        "",
        f"Index build (once per registry load, off the request path): {build_ms:.0f} ms. "
        f"Each query timed {args.repeat} times, cold (candidate cache emptied); target < 50 ms. "
        "Floor: a plain substring filter of the first word over every object's text, interleaved.",
        "",
        markdown_table(
            ["query", "hits (limit 50)", "median ms", "p99 ms", "max ms", "floor median ms", "ratio (median)",
             "HTTP median ms", "HTTP max ms"],
            [(f"`{q}`", n, f"{med:.2f}", f"{p99:.2f}", f"{mx:.2f}", f"{fl:.2f}", f"{med / fl:.1f}x",
              f"{h[1]:.2f}", f"{h[2]:.2f}")
             for (q, n, med, p99, mx, fl), h in zip(rows, http, strict=True)],
        ),
        "",
        f"Worst single query: {worst:.2f} ms ({'meets' if worst < 50 else 'MISSES'} the 50 ms target).",
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
