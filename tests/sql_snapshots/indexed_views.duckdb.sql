-- snapshot: tests/test_point_in_time_sql.py::indexed_views [duckdb]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS (
  SELECT
    "src".*,
    CAST("src"."event_timestamp" AS TIMESTAMP) AS "__fl_ts",
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
    "f"."merchant_id",
    "f"."event_ts"
  FROM "fl_snapshot"."user_merchant" AS "f"
  WHERE
    NOT "f"."user_id" IS NULL
    AND NOT "f"."merchant_id" IS NULL
    AND NOT "f"."event_ts" IS NULL
  GROUP BY
    "f"."user_id",
    "f"."merchant_id",
    "f"."event_ts"
  HAVING
    COUNT(*) > 1
), "__fl_v1" AS (
  SELECT
    "f"."user_id",
    "f"."merchant_id",
    "f"."event_ts",
    "f"."txn_count",
    "f"."first_seen"
  FROM "fl_snapshot"."user_merchant" AS "f"
  WHERE
    (
      NOT "f"."user_id" IS NULL
      AND NOT "f"."merchant_id" IS NULL
      AND NOT "f"."event_ts" IS NULL
    )
    AND NOT EXISTS(
      SELECT
        1
      FROM "__fl_v1_ties" AS "t"
      WHERE
        "t"."user_id" = "f"."user_id"
        AND "t"."merchant_id" = "f"."merchant_id"
        AND "t"."event_ts" = "f"."event_ts"
    )
  UNION ALL
  SELECT
    "user_id",
    "merchant_id",
    "event_ts",
    "txn_count",
    "first_seen"
  FROM (
    SELECT
      "f"."user_id",
      "f"."merchant_id",
      "f"."event_ts",
      "f"."txn_count",
      "f"."first_seen",
      ROW_NUMBER() OVER (
        PARTITION BY "f"."user_id", "f"."merchant_id", "f"."event_ts"
        ORDER BY "f"."txn_count" DESC, "f"."first_seen" DESC
      ) AS "__fl_rank"
    FROM "fl_snapshot"."user_merchant" AS "f"
    WHERE
      EXISTS(
        SELECT
          1
        FROM "__fl_v1_ties" AS "t"
        WHERE
          "t"."user_id" = "f"."user_id"
          AND "t"."merchant_id" = "f"."merchant_id"
          AND "t"."event_ts" = "f"."event_ts"
      )
  ) AS "ranked"
  WHERE
    "__fl_rank" = 1
), "__fl_v2_ties" AS (
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
), "__fl_v2" AS (
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
      FROM "__fl_v2_ties" AS "t"
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
        FROM "__fl_v2_ties" AS "t"
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
    WHEN "v0"."event_ts" >= "s"."__fl_ts" - INTERVAL '30' DAY
    THEN "v0"."amount"
  END AS "amount",
  CASE
    WHEN "v0"."event_ts" >= "s"."__fl_ts" - INTERVAL '30' DAY
    THEN "v0"."merchant"
  END AS "merchant",
  CASE
    WHEN "v1"."event_ts" >= "s"."__fl_ts" - INTERVAL '36' HOUR
    THEN "v1"."txn_count"
  END AS "txn_count",
  CASE
    WHEN "v1"."event_ts" >= "s"."__fl_ts" - INTERVAL '36' HOUR
    THEN "v1"."first_seen"
  END AS "first_seen",
  "v2"."age" AS "age"
FROM "__fl_spine" AS "s"
ASOF LEFT JOIN "__fl_v0" AS "v0"
  ON "s"."user_id" = "v0"."user_id" AND "s"."__fl_ts" >= "v0"."event_ts"
ASOF LEFT JOIN "__fl_v1" AS "v1"
  ON "s"."user_id" = "v1"."user_id"
  AND "s"."merchant_id" = "v1"."merchant_id"
  AND "s"."__fl_ts" >= "v1"."event_ts"
ASOF LEFT JOIN "__fl_v2" AS "v2"
  ON "s"."user_id" = "v2"."user_id" AND "s"."__fl_ts" >= "v2"."event_ts"
ORDER BY
  "s"."__fl_row"
