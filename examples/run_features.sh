#!/usr/bin/env bash
# The feature pipeline for cron (or any scheduler that runs a command and reads its exit code):
# the same three commands as examples/airflow_dag.py, in order.
#
#   PROJECT_DIR   the dbt project (default: the current folder)
#   REPORTS       where JSON run reports go (default: $PROJECT_DIR/target/run_reports)
#   RUN_ARGS      more `feature-layer run` options, e.g. "--select tag:hourly --no-docs"
#   CHECK_ARGS    which views `freshness` and `verify` check, e.g. "--select user_profile_features"
#
# Exit code: 0 all good, 1 the run failed (nothing after it ran), 3 the run completed but a view
# is stale (past its freshness SLA or TTL), 4 online values differ from the training-set SQL.
set -u
PROJECT_DIR="${PROJECT_DIR:-.}"
REPORTS="${REPORTS:-$PROJECT_DIR/target/run_reports}"
FEATURE_LAYER="${FEATURE_LAYER:-feature-layer}"
mkdir -p "$REPORTS"
report="$REPORTS/run_$(date -u +%Y%m%dT%H%M%SZ).json"

# shellcheck disable=SC2086  # RUN_ARGS is a list of options
"$FEATURE_LAYER" --project-dir "$PROJECT_DIR" run --report "$report" ${RUN_ARGS:-}
status=$?
if [ "$status" -eq 1 ] || { [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; }; then
  echo "feature pipeline FAILED (exit $status); report: $report" >&2
  exit 1
fi
"$FEATURE_LAYER" --project-dir "$PROJECT_DIR" freshness ${CHECK_ARGS:-} || status=3
if ! "$FEATURE_LAYER" --project-dir "$PROJECT_DIR" verify --sample 200 --threshold 0.01 ${CHECK_ARGS:-}; then
  echo "online values differ from the training-set SQL; report: $report" >&2
  exit 4
fi
exit "$status"
