-- snapshot: tests/test_point_in_time_sql.py::indexed_views [postgres]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH "__fl_spine" AS MATERIALIZED (
  SELECT
    "src".*,
    CAST("src"."event_timestamp" AS TIMESTAMP) AS "__fl_ts",
    ROW_NUMBER() OVER () AS "__fl_row"
  FROM "fl_snapshot"."entities" AS "src"
), "__fl_v2_events" AS (
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
      "s"."__fl_ts" AS "__fl_t",
      0 AS "__fl_feature",
      "s"."__fl_row",
      NULL AS "age"
    FROM "__fl_spine" AS "s"
  ) AS "u"
), "__fl_v2" AS (
  SELECT
    "e"."__fl_row",
    "f"."age"
  FROM "__fl_v2_events" AS "e"
  INNER JOIN "__fl_v2_events" AS "f"
    ON "e"."user_id" = "f"."user_id"
    AND "e"."__fl_grp" = "f"."__fl_grp"
    AND "f"."__fl_feature" = 1
  WHERE
    "e"."__fl_feature" = 0
)
SELECT
  "s"."user_id" AS "user_id",
  "s"."merchant_id" AS "merchant_id",
  "s"."event_timestamp" AS "event_timestamp",
  "s"."label" AS "label",
  "v0"."amount" AS "amount",
  "v0"."merchant" AS "merchant",
  "v1"."txn_count" AS "txn_count",
  "v1"."first_seen" AS "first_seen",
  "v2"."age" AS "age"
FROM "__fl_spine" AS "s"
LEFT JOIN LATERAL (
  SELECT
    "f"."amount",
    "f"."merchant"
  FROM "fl_snapshot"."user_activity" AS "f"
  WHERE
    "f"."user_id" = "s"."user_id"
    AND "f"."event_ts" <= "s"."__fl_ts"
    AND "f"."event_ts" >= "s"."__fl_ts" - INTERVAL '30 DAY'
  ORDER BY
    "f"."event_ts" DESC,
    "f"."created_ts" DESC NULLS LAST,
    "f"."amount" DESC NULLS LAST,
    CAST("f"."merchant" AS TEXT) COLLATE "C" DESC NULLS LAST
  LIMIT 1
) AS "v0"
  ON TRUE
LEFT JOIN LATERAL (
  SELECT
    "f"."txn_count",
    "f"."first_seen"
  FROM "fl_snapshot"."user_merchant" AS "f"
  WHERE
    "f"."user_id" = "s"."user_id"
    AND "f"."merchant_id" = "s"."merchant_id"
    AND "f"."event_ts" <= "s"."__fl_ts"
    AND "f"."event_ts" >= "s"."__fl_ts" - INTERVAL '36 HOUR'
  ORDER BY
    "f"."event_ts" DESC
  LIMIT 1
) AS "v1"
  ON TRUE
LEFT JOIN "__fl_v2" AS "v2"
  ON "v2"."__fl_row" = "s"."__fl_row"
ORDER BY
  "s"."__fl_row"
