"""The orchestration examples (ops1): examples/airflow_dag.py loaded by the real Apache Airflow
(DagBag, in a subprocess with its own AIRFLOW_HOME), and the commands its tasks run executed in
order with bash on a copy of the built example project; examples/run_features.sh likewise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from ops_helpers import REPO, validate_report

pytestmark = pytest.mark.xdist_group("ops_run")
EXAMPLES = REPO / "examples"
LOAD_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("feature_layer_pipeline")
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
                  "tasks": None if dag is None else [
                      {"id": t.task_id, "type": type(t).__name__, "command": t.bash_command, "env": t.env,
                       "downstream": sorted(t.downstream_task_ids)} for t in dag.tasks]}))
"""


@pytest.fixture(scope="module")
def dag_tasks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    home = tmp_path_factory.mktemp("airflow_home")
    done = subprocess.run([sys.executable, "-c", LOAD_DAG, str(EXAMPLES / "airflow_dag.py")], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "AIRFLOW_HOME": str(home)})
    assert done.returncode == 0, f"Airflow could not load the DAG (pip install -e '.[dev]' brings apache-airflow):\n" \
                                 f"{done.stderr[-3000:]}"
    body = json.loads(done.stdout.strip().splitlines()[-1])
    assert body["errors"] == {} and body["dags"] == ["feature_layer_pipeline"], body
    return body["tasks"]


def test_airflow_loads_the_dag_as_a_chain_of_three_commands(dag_tasks: list[dict]) -> None:
    by_id = {t["id"]: t for t in dag_tasks}
    assert set(by_id) == {"feature_layer_run", "freshness", "verify"}
    assert by_id["feature_layer_run"]["downstream"] == ["freshness"]
    assert by_id["freshness"]["downstream"] == ["verify"] and by_id["verify"]["downstream"] == []
    assert all(t["type"] == "BashOperator" for t in dag_tasks)
    assert "run --report" in by_id["feature_layer_run"]["command"] and "[ $? -eq 3 ]" in by_id["feature_layer_run"]["command"]


def bash(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("examples") / "project"
    shutil.copytree(built_example_project, dest, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    return dest


def pipeline_env(project: Path, reports: Path, now: datetime) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEATURE_LAYER_", "DBT_"))}
    return {**env, "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", "PROJECT_DIR": str(project),
            "REPORTS": str(reports), "RUN_ID": "manual__test", "FEATURE_LAYER_NOW": now.isoformat()}


def test_the_dags_commands_run_in_order_on_the_example_project(
    dag_tasks: list[dict], project: Path, fixture_now: datetime, tmp_path: Path
) -> None:
    """What each task's BashOperator runs (its env templates replaced by real values)."""
    env = pipeline_env(project, tmp_path, fixture_now)
    by_id = {t["id"]: t for t in dag_tasks}
    for task_id in ("feature_layer_run", "freshness", "verify"):
        assert set(by_id[task_id]["env"]) == {"PROJECT_DIR", "REPORTS", "RUN_ID"}
        done = bash(by_id[task_id]["command"], env)
        assert done.returncode == 0, f"{task_id}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    report = json.loads((tmp_path / "run_manual__test.json").read_text())
    validate_report(report)
    assert report["status"] == "ok" and len(report["views"]) == 4


def test_the_cron_script_runs_the_same_sequence(project: Path, fixture_now: datetime, tmp_path: Path) -> None:
    script = EXAMPLES / "run_features.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    env = {**pipeline_env(project, tmp_path, fixture_now), "RUN_ARGS": "--select user_profile_features --no-docs",
           "CHECK_ARGS": "--select user_profile_features"}
    done = bash(str(script), env)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    reports = list(tmp_path.glob("run_*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    validate_report(report)
    assert report["status"] == "ok" and [v["view"] for v in report["views"]] == ["user_profile_features"]
    crontab = (EXAMPLES / "crontab").read_text()
    assert "examples/run_features.sh" in crontab and "flock -n" in crontab
