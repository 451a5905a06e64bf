-- snapshot: tests/test_point_in_time_sql.py::three_views_full_names [postgres]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS MATERIALIZED (
  SELECT
    "src".*,
    CAST("src"."event_timestamp" AS TIMESTAMP) AS "__fl_ts",
    ROW_NUMBER() OVER () AS "__fl_row"
  FROM "fl_snapshot"."entities" AS "src"
), "__fl_v0" AS (
  SELECT
    "__fl_row",
    "amount"
  FROM (
    SELECT
      "s"."__fl_row",
      "f"."amount",
      ROW_NUMBER() OVER (
        PARTITION BY "s"."__fl_row"
        ORDER BY "f"."event_ts" DESC NULLS LAST, "f"."created_ts" DESC NULLS LAST, "f"."amount" DESC NULLS LAST, CAST("f"."merchant" AS TEXT) COLLATE "C" DESC NULLS LAST
      ) AS "__fl_rank"
    FROM "__fl_spine" AS "s"
    INNER JOIN "fl_snapshot"."user_activity" AS "f"
      ON "s"."user_id" = "f"."user_id"
      AND "f"."event_ts" <= "s"."__fl_ts"
      AND "f"."event_ts" >= "s"."__fl_ts" - INTERVAL '30 DAY'
  ) AS "ranked"
  WHERE
    "__fl_rank" = 1
), "__fl_v1" AS (
  SELECT
    "__fl_row",
    "txn_count",
    "first_seen"
  FROM (
    SELECT
      "s"."__fl_row",
      "f"."txn_count",
      "f"."first_seen",
      ROW_NUMBER() OVER (
        PARTITION BY "s"."__fl_row"
        ORDER BY "f"."event_ts" DESC NULLS LAST, "f"."txn_count" DESC NULLS LAST, "f"."first_seen" DESC NULLS LAST
      ) AS "__fl_rank"
    FROM "__fl_spine" AS "s"
    INNER JOIN "fl_snapshot"."user_merchant" AS "f"
      ON "s"."user_id" = "f"."user_id"
      AND "s"."merchant_id" = "f"."merchant_id"
      AND "f"."event_ts" <= "s"."__fl_ts"
      AND "f"."event_ts" >= "s"."__fl_ts" - INTERVAL '36 HOUR'
  ) AS "ranked"
  WHERE
    "__fl_rank" = 1
), "__fl_v2" AS (
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
  "v0"."amount" AS "user_activity__amount",
  "v1"."txn_count" AS "user_merchant__txn_count",
  "v1"."first_seen" AS "user_merchant__first_seen",
  "v2"."age" AS "user_profile__age"
FROM "__fl_spine" AS "s"
LEFT JOIN "__fl_v0" AS "v0"
  ON "v0"."__fl_row" = "s"."__fl_row"
LEFT JOIN "__fl_v1" AS "v1"
  ON "v1"."__fl_row" = "s"."__fl_row"
LEFT JOIN "__fl_v2" AS "v2"
  ON "v2"."__fl_row" = "s"."__fl_row"
ORDER BY
  "s"."__fl_row"
