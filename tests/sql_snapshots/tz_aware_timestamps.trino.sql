-- snapshot: tests/test_point_in_time_sql.py::tz_aware_timestamps [trino]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS (
  SELECT
    "src".*,
    CAST(AT_TIMEZONE("src"."event_timestamp", 'UTC') AS TIMESTAMP) AS "__fl_ts",
    ROW_NUMBER() OVER (
      ORDER BY "src"."user_id" NULLS FIRST, "src"."merchant_id" NULLS FIRST, "src"."event_timestamp" NULLS FIRST, "src"."label" NULLS FIRST
    ) AS "__fl_row"
  FROM "fl_snapshot"."entities" AS "src"
), "__fl_v0" AS (
  SELECT
    "__fl_row",
    "amount",
    "merchant"
  FROM (
    SELECT
      "s"."__fl_row",
      "f"."amount",
      "f"."merchant",
      ROW_NUMBER() OVER (
        PARTITION BY "s"."__fl_row"
        ORDER BY "f"."event_ts" DESC, "f"."created_ts" DESC, "f"."amount" DESC, "f"."merchant" DESC
      ) AS "__fl_rank"
    FROM "__fl_spine" AS "s"
    INNER JOIN "fl_snapshot"."user_activity" AS "f"
      ON "s"."user_id" = "f"."user_id"
      AND CAST(AT_TIMEZONE("f"."event_ts", 'UTC') AS TIMESTAMP) <= "s"."__fl_ts"
      AND CAST(AT_TIMEZONE("f"."event_ts", 'UTC') AS TIMESTAMP) >= "s"."__fl_ts" - INTERVAL '30' DAY
  ) AS "ranked"
  WHERE
    "__fl_rank" = 1
), "__fl_v1" AS (
  SELECT
    "__fl_row",
    "age"
  FROM (
    SELECT
      "s"."__fl_row",
      "f"."age",
      ROW_NUMBER() OVER (PARTITION BY "s"."__fl_row" ORDER BY "f"."event_ts" DESC, "f"."age" DESC) AS "__fl_rank"
    FROM "__fl_spine" AS "s"
    INNER JOIN "fl_snapshot"."user_profile" AS "f"
      ON "s"."user_id" = "f"."user_id" AND "f"."event_ts" <= "s"."__fl_ts"
  ) AS "ranked"
  WHERE
    "__fl_rank" = 1
)
SELECT
  "s"."user_id" AS "user_id",
  "s"."merchant_id" AS "merchant_id",
  "s"."event_timestamp" AS "event_timestamp",
  "s"."label" AS "label",
  "v0"."amount" AS "amount",
  "v0"."merchant" AS "merchant",
  "v1"."age" AS "age"
FROM "__fl_spine" AS "s"
LEFT JOIN "__fl_v0" AS "v0"
  ON "v0"."__fl_row" = "s"."__fl_row"
LEFT JOIN "__fl_v1" AS "v1"
  ON "v1"."__fl_row" = "s"."__fl_row"
ORDER BY
  "s"."__fl_row"
