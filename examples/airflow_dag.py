"""An Apache Airflow DAG running the feature pipeline every hour (Airflow 3; the ``airflow.sdk`` API).

One task per command, branching on ``feature-layer``'s exit codes:

* ``feature_layer_run``: ``feature-layer run`` (dbt build → validate → materialize →
  statistics → freshness) writing its JSON report; exit 1 fails the task (and the DAG run),
  exit 3 ("completed with stale views") succeeds, so fresh views stay served and the next
  task reports the stale ones;
* ``freshness``: ``feature-layer freshness`` fails (exit 1) when a view is past its SLA's
  ``error_after``: alert on this task, not on the pipeline;
* ``verify``: ``feature-layer verify`` fails when online values differ from what a training set
  built now would contain by more than 1% for some feature.

Set the Airflow Variables ``feature_layer_project_dir`` (the dbt project) and
``feature_layer_reports`` (a folder for run reports), or edit the defaults below. The commands
are in ``COMMANDS`` so a test (tests/test_ops_examples.py) runs exactly what the DAG runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

PROJECT_DIR = "{{ var.value.get('feature_layer_project_dir', '/opt/feature_project') }}"
REPORTS = "{{ var.value.get('feature_layer_reports', '/tmp/feature_layer_reports') }}"

STALE = 3
"""`feature-layer run`'s exit code for "completed with stale views"."""

COMMANDS: dict[str, str] = {
    # `|| [ $? -eq 3 ]`: a run that completed with stale views is not a failed run.
    "feature_layer_run": 'feature-layer --project-dir "$PROJECT_DIR" run --report "$REPORTS/run_$RUN_ID.json" '
                         f"|| [ $? -eq {STALE} ]",
    "freshness": 'feature-layer --project-dir "$PROJECT_DIR" freshness',
    "verify": 'feature-layer --project-dir "$PROJECT_DIR" verify --sample 200 --threshold 0.01',
}
"""Each task's shell command (``$PROJECT_DIR``, ``$REPORTS`` and ``$RUN_ID`` come from ``env``)."""

with DAG(
    dag_id="feature_layer_pipeline",
    description="dbt build → validate → materialize → statistics → freshness → verify",
    schedule=timedelta(hours=1),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs of one view refuse each other anyway (leases); do not queue them
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["feature_layer", "dbt"],
) as dag:
    tasks = {
        name: BashOperator(
            task_id=name,
            bash_command=command,
            env={"PROJECT_DIR": PROJECT_DIR, "REPORTS": REPORTS, "RUN_ID": "{{ run_id | replace(':', '_') }}"},
            append_env=True,
        )
        for name, command in COMMANDS.items()
    }
    tasks["feature_layer_run"] >> tasks["freshness"] >> tasks["verify"]
