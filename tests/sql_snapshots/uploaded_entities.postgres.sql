-- snapshot: tests/test_point_in_time_sql.py::uploaded_entities [postgres]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS (
  SELECT
    "src".*
  FROM "__fl_entities_0" AS "src"
), "__fl_v0_events" AS (
  SELECT
    "u"."user_id",
    "u"."__fl_t",
    "u"."__fl_feature",
    "u"."__fl_row",
    "u"."age",
    SUM("u"."__fl_feature") OVER (
      PARTITION BY "u"."user_id"
      ORDER BY "u"."__fl_t" ASC NULLS FIRST, "u"."__fl_feature" DESC NULLS LAST, "u"."age" ASC NULLS FIRST
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS "__fl_grp"
  FROM (
    SELECT
      "f"."user_id",
      "f"."event_ts" AS "__fl_t",
      1 AS "__fl_feature",
      NULL AS "__fl_row",
      "f"."age"
    FROM "fl_snapshot"."user_profile" AS "f"
    WHERE
      NOT "f"."user_id" IS NULL AND NOT "f"."event_ts" IS NULL
    UNION ALL
    SELECT
      "s"."user_id",
      "s"."event_timestamp" AS "__fl_t",
      0 AS "__fl_feature",
      "s"."__fl_row",
      NULL AS "age"
    FROM "__fl_spine" AS "s"
  ) AS "u"
), "__fl_v0" AS (
  SELECT
    "e"."__fl_row",
    "f"."age"
  FROM "__fl_v0_events" AS "e"
  INNER JOIN "__fl_v0_events" AS "f"
    ON "e"."user_id" = "f"."user_id"
    AND "e"."__fl_grp" = "f"."__fl_grp"
    AND "f"."__fl_feature" = 1
  WHERE
    "e"."__fl_feature" = 0
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
