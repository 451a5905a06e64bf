-- snapshot: tests/test_point_in_time_sql.py::uploaded_entities [postgres]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS (
  SELECT
    "src".*
  FROM "__fl_entities_0" AS "src"
), "__fl_v0" AS (
  SELECT
    "__fl_row",
    "age"
  FROM (
    SELECT
      "s"."__fl_row",
      "f"."age",
      ROW_NUMBER() OVER (
        PARTITION BY "s"."__fl_row"
        ORDER BY "f"."event_ts" DESC NULLS LAST, "f"."age" DESC NULLS LAST
      ) AS "__fl_rank"
    FROM "__fl_spine" AS "s"
    INNER JOIN "fl_snapshot"."user_profile" AS "f"
      ON "s"."user_id" = "f"."user_id" AND "f"."event_ts" <= "s"."event_timestamp"
  ) AS "ranked"
  WHERE
    "__fl_rank" = 1
)
SELECT
  "s"."user_id" AS "user_id",
  "s"."event_timestamp" AS "event_timestamp",
  "s"."is_fraud" AS "is_fraud",
  "v0"."age" AS "age"
FROM "__fl_spine" AS "s"
LEFT JOIN "__fl_v0" AS "v0"
  ON "v0"."__fl_row" = "s"."__fl_row"
ORDER BY
  "s"."__fl_row"
