-- snapshot: tests/test_point_in_time_sql.py::indexed_views [bigquery]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH `__fl_spine` AS (
  SELECT
    `src`.*,
    CAST(`src`.`event_timestamp` AS DATETIME) AS `__fl_ts`,
    ROW_NUMBER() OVER (
      ORDER BY `src`.`user_id`, `src`.`merchant_id`, `src`.`event_timestamp`, `src`.`label`
    ) AS `__fl_row`
  FROM `fl_snapshot`.`entities` AS `src`
), `__fl_v0_events` AS (
  SELECT
    `u`.`user_id`,
    `u`.`__fl_t`,
    `u`.`__fl_feature`,
    `u`.`__fl_row`,
    `u`.`amount`,
    `u`.`merchant`,
    SUM(`u`.`__fl_feature`) OVER (
      PARTITION BY `u`.`user_id`
      ORDER BY `u`.`__fl_t` ASC, `u`.`__fl_feature` DESC, `u`.`created_ts` ASC, `u`.`amount` ASC, `u`.`merchant` ASC
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS `__fl_grp`
  FROM (
    SELECT
      `f`.`user_id`,
      `f`.`event_ts` AS `__fl_t`,
      1 AS `__fl_feature`,
      NULL AS `__fl_row`,
      `f`.`created_ts`,
      `f`.`amount`,
      `f`.`merchant`
    FROM `fl_snapshot`.`user_activity` AS `f`
    WHERE
      NOT `f`.`user_id` IS NULL AND NOT `f`.`event_ts` IS NULL
    UNION ALL
    SELECT
      `s`.`user_id`,
      `s`.`__fl_ts` AS `__fl_t`,
      0 AS `__fl_feature`,
      `s`.`__fl_row`,
      NULL AS `created_ts`,
      NULL AS `amount`,
      NULL AS `merchant`
    FROM `__fl_spine` AS `s`
  ) AS `u`
), `__fl_v0` AS (
  SELECT
    `e`.`__fl_row`,
    `f`.`amount`,
    `f`.`merchant`
  FROM `__fl_v0_events` AS `e`
  INNER JOIN `__fl_v0_events` AS `f`
    ON `e`.`user_id` = `f`.`user_id`
    AND `e`.`__fl_grp` = `f`.`__fl_grp`
    AND `f`.`__fl_feature` = 1
    AND `f`.`__fl_t` >= `e`.`__fl_t` - INTERVAL '30' DAY
  WHERE
    `e`.`__fl_feature` = 0
), `__fl_v1_events` AS (
  SELECT
    `u`.`user_id`,
    `u`.`merchant_id`,
    `u`.`__fl_t`,
    `u`.`__fl_feature`,
    `u`.`__fl_row`,
    `u`.`txn_count`,
    `u`.`first_seen`,
    SUM(`u`.`__fl_feature`) OVER (
      PARTITION BY `u`.`user_id`, `u`.`merchant_id`
      ORDER BY `u`.`__fl_t` ASC, `u`.`__fl_feature` DESC, `u`.`txn_count` ASC, `u`.`first_seen` ASC
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS `__fl_grp`
  FROM (
    SELECT
      `f`.`user_id`,
      `f`.`merchant_id`,
      `f`.`event_ts` AS `__fl_t`,
      1 AS `__fl_feature`,
      NULL AS `__fl_row`,
      `f`.`txn_count`,
      `f`.`first_seen`
    FROM `fl_snapshot`.`user_merchant` AS `f`
    WHERE
      NOT `f`.`user_id` IS NULL
      AND NOT `f`.`merchant_id` IS NULL
      AND NOT `f`.`event_ts` IS NULL
    UNION ALL
    SELECT
      `s`.`user_id`,
      `s`.`merchant_id`,
      `s`.`__fl_ts` AS `__fl_t`,
      0 AS `__fl_feature`,
      `s`.`__fl_row`,
      NULL AS `txn_count`,
      NULL AS `first_seen`
    FROM `__fl_spine` AS `s`
  ) AS `u`
), `__fl_v1` AS (
  SELECT
    `e`.`__fl_row`,
    `f`.`txn_count`,
    `f`.`first_seen`
  FROM `__fl_v1_events` AS `e`
  INNER JOIN `__fl_v1_events` AS `f`
    ON `e`.`user_id` = `f`.`user_id`
    AND `e`.`merchant_id` = `f`.`merchant_id`
    AND `e`.`__fl_grp` = `f`.`__fl_grp`
    AND `f`.`__fl_feature` = 1
    AND `f`.`__fl_t` >= `e`.`__fl_t` - INTERVAL '36' HOUR
  WHERE
    `e`.`__fl_feature` = 0
), `__fl_v2_events` AS (
  SELECT
    `u`.`user_id`,
    `u`.`__fl_t`,
    `u`.`__fl_feature`,
    `u`.`__fl_row`,
    `u`.`age`,
    SUM(`u`.`__fl_feature`) OVER (
      PARTITION BY `u`.`user_id`
      ORDER BY `u`.`__fl_t` ASC, `u`.`__fl_feature` DESC, `u`.`age` ASC
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS `__fl_grp`
  FROM (
    SELECT
      `f`.`user_id`,
      `f`.`event_ts` AS `__fl_t`,
      1 AS `__fl_feature`,
      NULL AS `__fl_row`,
      `f`.`age`
    FROM `fl_snapshot`.`user_profile` AS `f`
    WHERE
      NOT `f`.`user_id` IS NULL AND NOT `f`.`event_ts` IS NULL
    UNION ALL
    SELECT
      `s`.`user_id`,
      `s`.`__fl_ts` AS `__fl_t`,
      0 AS `__fl_feature`,
      `s`.`__fl_row`,
      NULL AS `age`
    FROM `__fl_spine` AS `s`
  ) AS `u`
), `__fl_v2` AS (
  SELECT
    `e`.`__fl_row`,
    `f`.`age`
  FROM `__fl_v2_events` AS `e`
  INNER JOIN `__fl_v2_events` AS `f`
    ON `e`.`user_id` = `f`.`user_id`
    AND `e`.`__fl_grp` = `f`.`__fl_grp`
    AND `f`.`__fl_feature` = 1
  WHERE
    `e`.`__fl_feature` = 0
)
SELECT
  `s`.`user_id` AS `user_id`,
  `s`.`merchant_id` AS `merchant_id`,
  `s`.`event_timestamp` AS `event_timestamp`,
  `s`.`label` AS `label`,
  `v0`.`amount` AS `amount`,
  `v0`.`merchant` AS `merchant`,
  `v1`.`txn_count` AS `txn_count`,
  `v1`.`first_seen` AS `first_seen`,
  `v2`.`age` AS `age`
FROM `__fl_spine` AS `s`
LEFT JOIN `__fl_v0` AS `v0`
  ON `v0`.`__fl_row` = `s`.`__fl_row`
LEFT JOIN `__fl_v1` AS `v1`
  ON `v1`.`__fl_row` = `s`.`__fl_row`
LEFT JOIN `__fl_v2` AS `v2`
  ON `v2`.`__fl_row` = `s`.`__fl_row`
ORDER BY
  `s`.`__fl_row` NULLS LAST
