"""Column-level lineage: from raw source columns through models to features and ML exposures."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from server_helpers import build_registry, registry_of

from feature_layer.cli import main
from feature_layer.dbt.artifacts import DbtNode
from feature_layer.errors import UnknownFeatureError
from feature_layer.registry.column_lineage import column_lineage, depth_of
from feature_layer.registry.model import Feature, FeatureView, Relation


def edges(graph) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.edges}


def test_feature_traces_through_an_intermediate_model_to_the_raw_column():
    graph = column_lineage(build_registry(), "user_txn_features.amount_sum_7d")
    assert edges(graph) == {
        ("source.fraud.raw.transactions:amount", "model.fraud.stg_transactions:amount"),
        ("model.fraud.stg_transactions:amount", "model.fraud.user_txn_features:amount_sum_7d"),
        ("model.fraud.user_txn_features:amount_sum_7d", "exposure.fraud.fraud_model_v1"),
    }
    root = graph.node(graph.root)
    assert root.kind == "feature" and root.sql_type == "DOUBLE"
    assert root.expression == "SUM(daily.total) OVER w"  # through the CTE to the window aggregate
    assert [n.name for n in graph.sources] == ["raw.transactions"]
    assert [n.name for n in graph.exposures] == ["fraud_model_v1"]
    assert [n.id for n in graph.nodes][0] == "source.fraud.raw.transactions:amount"  # upstream first
    assert graph.warnings == ()


def test_renamed_and_derived_columns_are_followed_across_joins():
    graph = column_lineage(build_registry(), "merchant_risk.foreign_share")
    assert ("source.fraud.raw.transactions:country", "model.fraud.stg_transactions:is_domestic") in edges(graph)
    assert ("model.fraud.stg_transactions:is_domestic", "model.fraud.merchant_risk:foreign_share") in edges(graph)
    assert graph.exposures == []  # no ML model uses it
    rate = column_lineage(build_registry(), "merchant_risk.chargeback_rate")
    sources = {(n.name, n.column) for n in rate.sources}
    assert ("raw.chargebacks", "txn_id") in sources  # count(c.txn_id) over the join
    depth = depth_of(rate)
    assert depth[rate.root] == max(d for n, d in depth.items() if not n.startswith("exposure."))


def test_unknown_feature_names_the_close_matches():
    with pytest.raises(UnknownFeatureError, match="amount_sum_7d"):
        column_lineage(build_registry(), "user_txn_features.amount_sum_7")
    with pytest.raises(UnknownFeatureError, match="Did you mean 'user_txn_features'"):
        column_lineage(build_registry(), "user_txn_feature.amount_sum_7d")


def test_unreadable_sql_stops_the_walk_with_a_warning_not_an_error():
    registry = build_registry()
    stg = registry.nodes["model.fraud.stg_transactions"]
    registry.nodes["model.fraud.stg_transactions"] = replace(stg, compiled_sql="select from where ((")
    graph = column_lineage(registry, "user_txn_features.amount_sum_7d")
    assert "model.fraud.stg_transactions:amount" in {n.id for n in graph.nodes}
    assert graph.sources == []
    assert any("stg_transactions" in w for w in graph.warnings)


def test_graph_serialises_to_json():
    data = column_lineage(build_registry(), "user_txn_features.txn_count_7d").to_dict()
    assert json.loads(json.dumps(data)) == data
    assert {"feature", "root", "nodes", "edges", "warnings"} <= set(data)


# -- the example project, built by dbt ------------------------------------------------------

def test_example_project_lineage_reaches_the_raw_parquet_sources(built_example_project: Path):
    from feature_layer import FeatureStore

    with FeatureStore(built_example_project) as store:
        registry = store.registry
        graph = registry.column_lineage("user_transaction_features.amount")
        assert ("source.feature_layer.raw.transactions:amount", "model.feature_layer.stg_transactions:amount") in edges(graph)
        assert [n.name for n in graph.exposures] == ["fraud_model_v1"]
        for view in registry.views.values():
            for feature in view.features:
                g = registry.column_lineage(feature.ref)
                assert g.sources, f"{feature.ref} has no source column"
                assert not g.warnings, g.warnings
                assert all(n.kind != "external" for n in g.nodes), [n.id for n in g.nodes if n.kind == "external"]


def test_cli_prints_the_tree_and_json(built_example_project: Path, tmp_path: Path):
    project = tmp_path / "p"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    runner = CliRunner()
    result = runner.invoke(main, ["--project-dir", str(project), "column-lineage", "user_profile_features.age_at_signup"])
    assert result.exit_code == 0, result.output
    assert "user_profile_features.age_at_signup" in result.output
    assert "raw.users.birth_year [source" in result.output and "fraud_model_v1" in result.output
    result = runner.invoke(main, ["--project-dir", str(project), "column-lineage", "user_profile_features.age", "--json"])
    assert result.exit_code == 1 and "age_at_signup" in result.output
    result = runner.invoke(main, ["--project-dir", str(project), "column-lineage", "user_profile_features.country", "--json"])
    data = json.loads(result.output)
    assert {n["column"] for n in data["nodes"] if n["kind"] == "source"} == {"country"}


# -- property: lineage equals the generator's own bookkeeping --------------------------------

SOURCE_COLUMNS = ["a", "b", "c", "d"]


@st.composite
def model_chains(draw):
    """A source and a chain of models; each output column is a rename, a sum of two inputs or a
    constant, optionally computed inside a CTE. Returns the nodes and, per final column, the
    set of source columns it truly depends on."""
    n_models = draw(st.integers(1, 4))
    deps = {c: {c} for c in SOURCE_COLUMNS}  # current relation's column -> source columns
    prev_uid, prev_table = "source.p.raw.t", '"db"."raw"."t"'
    nodes = {prev_uid: DbtNode(unique_id=prev_uid, name="t", resource_type="source", relation=Relation("db", "raw", "t"),
                               catalog_types={c: "INTEGER" for c in SOURCE_COLUMNS})}
    for m in range(n_models):
        cols = sorted(deps)
        n_out = draw(st.integers(1, 4))
        select, new_deps = [], {}
        for j in range(n_out):
            kind = draw(st.sampled_from(["rename", "sum", "const"]))
            name = f"m{m}_c{j}"
            if kind == "rename":
                x = draw(st.sampled_from(cols))
                select.append(f"{x} as {name}")
                new_deps[name] = deps[x]
            elif kind == "sum":
                x, y = draw(st.sampled_from(cols)), draw(st.sampled_from(cols))
                select.append(f"{x} + {y} as {name}")
                new_deps[name] = deps[x] | deps[y]
            else:
                select.append(f"42 as {name}")
                new_deps[name] = set()
        body = f"select {', '.join(select)} from {{src}}"
        if draw(st.booleans()):
            sql = f"with base as (select * from {prev_table}) " + body.format(src="base")
        else:
            sql = body.format(src=prev_table)
        uid = f"model.p.m{m}"
        nodes[uid] = DbtNode(unique_id=uid, name=f"m{m}", resource_type="model", relation=Relation("db", "main", f"m{m}"),
                             catalog_types={c: "INTEGER" for c in new_deps}, compiled_sql=sql, depends_on=(prev_uid,))
        deps, prev_uid, prev_table = new_deps, uid, f'"db"."main"."m{m}"'
    return nodes, prev_uid, deps


@settings(max_examples=40, deadline=None)
@given(model_chains())
def test_lineage_finds_exactly_the_source_columns_each_feature_reads(chain):
    nodes, last_uid, deps = chain
    name = nodes[last_uid].name
    features = tuple(Feature(c, name, "int64") for c in deps)
    view = FeatureView(name, last_uid, ("e",), ("k",), "ts", features, nodes[last_uid].relation)
    registry = registry_of(entities={}, views={name: view}, services={}, nodes=nodes)
    for column, expected in deps.items():
        graph = column_lineage(registry, f"{name}.{column}")
        assert {n.column for n in graph.sources} == expected, (column, nodes[last_uid].compiled_sql)
        assert not graph.warnings
