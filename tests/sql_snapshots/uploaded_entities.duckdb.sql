-- snapshot: tests/test_point_in_time_sql.py::uploaded_entities [duckdb]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS (
  SELECT
    "src".*
  FROM "__fl_entities_0" AS "src"
), "__fl_v0_ties" AS (
  SELECT
    "f"."user_id",
    "f"."event_ts"
  FROM "fl_snapshot"."user_profile" AS "f"
  WHERE
    NOT "f"."user_id" IS NULL AND NOT "f"."event_ts" IS NULL
  GROUP BY
    "f"."user_id",
    "f"."event_ts"
  HAVING
    COUNT(*) > 1
), "__fl_v0" AS (
  SELECT
    "f"."user_id",
    "f"."event_ts",
    "f"."age"
  FROM "fl_snapshot"."user_profile" AS "f"
  WHERE
    (
      NOT "f"."user_id" IS NULL AND NOT "f"."event_ts" IS NULL
    )
    AND NOT EXISTS(
      SELECT
        1
      FROM "__fl_v0_ties" AS "t"
      WHERE
        "t"."user_id" = "f"."user_id" AND "t"."event_ts" = "f"."event_ts"
    )
  UNION ALL
  SELECT
    "user_id",
    "event_ts",
    "age"
  FROM (
    SELECT
      "f"."user_id",
      "f"."event_ts",
      "f"."age",
      ROW_NUMBER() OVER (PARTITION BY "f"."user_id", "f"."event_ts" ORDER BY "f"."age" DESC) AS "__fl_rank"
    FROM "fl_snapshot"."user_profile" AS "f"
    WHERE
      EXISTS(
        SELECT
          1
        FROM "__fl_v0_ties" AS "t"
        WHERE
          "t"."user_id" = "f"."user_id" AND "t"."event_ts" = "f"."event_ts"
      )
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
ASOF LEFT JOIN "__fl_v0" AS "v0"
  ON "s"."user_id" = "v0"."user_id" AND "s"."event_timestamp" >= "v0"."event_ts"
ORDER BY
  "s"."__fl_row"
