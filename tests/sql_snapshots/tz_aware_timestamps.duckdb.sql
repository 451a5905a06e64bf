-- snapshot: tests/test_point_in_time_sql.py::tz_aware_timestamps [duckdb]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS (
  SELECT
    "src".*,
    "src"."event_timestamp" AT TIME ZONE 'UTC' AS "__fl_ts",
    ROW_NUMBER() OVER () AS "__fl_row"
  FROM "fl_snapshot"."entities" AS "src"
), "__fl_v0_ties" AS (
  SELECT
    "f"."user_id",
    "f"."event_ts"
  FROM "fl_snapshot"."user_activity" AS "f"
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
    "f"."amount",
    "f"."merchant"
  FROM "fl_snapshot"."user_activity" AS "f"
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
    "amount",
    "merchant"
  FROM (
    SELECT
      "f"."user_id",
      "f"."event_ts",
      "f"."amount",
      "f"."merchant",
      ROW_NUMBER() OVER (
        PARTITION BY "f"."user_id", "f"."event_ts"
        ORDER BY "f"."created_ts" DESC, "f"."amount" DESC, "f"."merchant" DESC
      ) AS "__fl_rank"
    FROM "fl_snapshot"."user_activity" AS "f"
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
), "__fl_v1_ties" AS (
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
), "__fl_v1" AS (
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
      FROM "__fl_v1_ties" AS "t"
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
        FROM "__fl_v1_ties" AS "t"
        WHERE
          "t"."user_id" = "f"."user_id" AND "t"."event_ts" = "f"."event_ts"
      )
  ) AS "ranked"
  WHERE
    "__fl_rank" = 1
)
SELECT
  "s"."user_id" AS "user_id",
  "s"."merchant_id" AS "merchant_id",
  "s"."event_timestamp" AS "event_timestamp",
  "s"."label" AS "label",
  CASE
    WHEN "v0"."event_ts" >= (
      "s"."__fl_ts" - INTERVAL '30' DAY
    ) AT TIME ZONE 'UTC'
    THEN "v0"."amount"
  END AS "amount",
  CASE
    WHEN "v0"."event_ts" >= (
      "s"."__fl_ts" - INTERVAL '30' DAY
    ) AT TIME ZONE 'UTC'
    THEN "v0"."merchant"
  END AS "merchant",
  "v1"."age" AS "age"
FROM "__fl_spine" AS "s"
ASOF LEFT JOIN "__fl_v0" AS "v0"
  ON "s"."user_id" = "v0"."user_id"
  AND "s"."__fl_ts" AT TIME ZONE 'UTC' >= "v0"."event_ts"
ASOF LEFT JOIN "__fl_v1" AS "v1"
  ON "s"."user_id" = "v1"."user_id" AND "s"."__fl_ts" >= "v1"."event_ts"
ORDER BY
  "s"."__fl_row"
