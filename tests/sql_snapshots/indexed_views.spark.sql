-- snapshot: tests/test_point_in_time_sql.py::indexed_views [spark]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH `__fl_spine` AS (
  SELECT
    `src`.*,
    CAST(`src`.`event_timestamp` AS TIMESTAMP) AS `__fl_ts`,
    MONOTONICALLY_INCREASING_ID() AS `__fl_row`
  FROM `fl_snapshot`.`entities` AS `src`
), `__fl_v0` AS (
  SELECT
    `c`.`user_id`,
    `c`.`merchant_id`,
    `c`.`event_timestamp`,
    `c`.`label`,
    `c`.`__fl_row`,
    `c`.`__fl_ts`,
    CASE
      WHEN `c`.`__fl_latest`.`__fl_t` >= `c`.`__fl_t` - INTERVAL '30' DAY
      THEN `c`.`__fl_latest`.`amount`
    END AS `amount`,
    CASE
      WHEN `c`.`__fl_latest`.`__fl_t` >= `c`.`__fl_t` - INTERVAL '30' DAY
      THEN `c`.`__fl_latest`.`merchant`
    END AS `merchant`
  FROM (
    SELECT
      `u`.`__fl_t`,
      `u`.`__fl_feature`,
      `u`.`user_id`,
      `u`.`merchant_id`,
      `u`.`event_timestamp`,
      `u`.`label`,
      `u`.`__fl_row`,
      `u`.`__fl_ts`,
      LAST(`u`.`__fl_r`) IGNORE NULLS OVER (
        PARTITION BY `u`.`__fl_k0`
        ORDER BY `u`.`__fl_t` ASC, `u`.`__fl_feature` DESC, `u`.`__fl_o0` ASC, `u`.`__fl_o1` ASC, `u`.`__fl_o2` ASC
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ) AS `__fl_latest`
    FROM (
      SELECT
        `f`.`user_id` AS `__fl_k0`,
        `f`.`event_ts` AS `__fl_t`,
        1 AS `__fl_feature`,
        `f`.`created_ts` AS `__fl_o0`,
        `f`.`amount` AS `__fl_o1`,
        `f`.`merchant` AS `__fl_o2`,
        STRUCT(`f`.`event_ts` AS `__fl_t`, `f`.`amount` AS `amount`, `f`.`merchant` AS `merchant`) AS `__fl_r`,
        NULL AS `user_id`,
        NULL AS `merchant_id`,
        NULL AS `event_timestamp`,
        NULL AS `label`,
        NULL AS `__fl_row`,
        NULL AS `__fl_ts`
      FROM `fl_snapshot`.`user_activity` AS `f`
      WHERE
        NOT `f`.`user_id` IS NULL AND NOT `f`.`event_ts` IS NULL
      UNION ALL
      SELECT
        `s`.`user_id` AS `__fl_k0`,
        `s`.`__fl_ts` AS `__fl_t`,
        0 AS `__fl_feature`,
        NULL AS `__fl_o0`,
        NULL AS `__fl_o1`,
        NULL AS `__fl_o2`,
        NULL AS `__fl_r`,
        `s`.`user_id`,
        `s`.`merchant_id`,
        `s`.`event_timestamp`,
        `s`.`label`,
        `s`.`__fl_row`,
        `s`.`__fl_ts`
      FROM `__fl_spine` AS `s`
    ) AS `u`
  ) AS `c`
  WHERE
    `c`.`__fl_feature` = 0
), `__fl_v1` AS (
  SELECT
    `c`.`user_id`,
    `c`.`merchant_id`,
    `c`.`event_timestamp`,
    `c`.`label`,
    `c`.`__fl_row`,
    `c`.`__fl_ts`,
    `c`.`amount`,
    `c`.`merchant`,
    CASE
      WHEN `c`.`__fl_latest`.`__fl_t` >= `c`.`__fl_t` - INTERVAL '36' HOUR
      THEN `c`.`__fl_latest`.`txn_count`
    END AS `txn_count`,
    CASE
      WHEN `c`.`__fl_latest`.`__fl_t` >= `c`.`__fl_t` - INTERVAL '36' HOUR
      THEN `c`.`__fl_latest`.`first_seen`
    END AS `first_seen`
  FROM (
    SELECT
      `u`.`__fl_t`,
      `u`.`__fl_feature`,
      `u`.`user_id`,
      `u`.`merchant_id`,
      `u`.`event_timestamp`,
      `u`.`label`,
      `u`.`__fl_row`,
      `u`.`__fl_ts`,
      `u`.`amount`,
      `u`.`merchant`,
      LAST(`u`.`__fl_r`) IGNORE NULLS OVER (
        PARTITION BY `u`.`__fl_k0`, `u`.`__fl_k1`
        ORDER BY `u`.`__fl_t` ASC, `u`.`__fl_feature` DESC, `u`.`__fl_o0` ASC, `u`.`__fl_o1` ASC
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ) AS `__fl_latest`
    FROM (
      SELECT
        `f`.`user_id` AS `__fl_k0`,
        `f`.`merchant_id` AS `__fl_k1`,
        `f`.`event_ts` AS `__fl_t`,
        1 AS `__fl_feature`,
        `f`.`txn_count` AS `__fl_o0`,
        `f`.`first_seen` AS `__fl_o1`,
        STRUCT(
          `f`.`event_ts` AS `__fl_t`,
          `f`.`txn_count` AS `txn_count`,
          `f`.`first_seen` AS `first_seen`
        ) AS `__fl_r`,
        NULL AS `user_id`,
        NULL AS `merchant_id`,
        NULL AS `event_timestamp`,
        NULL AS `label`,
        NULL AS `__fl_row`,
        NULL AS `__fl_ts`,
        NULL AS `amount`,
        NULL AS `merchant`
      FROM `fl_snapshot`.`user_merchant` AS `f`
      WHERE
        NOT `f`.`user_id` IS NULL
        AND NOT `f`.`merchant_id` IS NULL
        AND NOT `f`.`event_ts` IS NULL
      UNION ALL
      SELECT
        `s`.`user_id` AS `__fl_k0`,
        `s`.`merchant_id` AS `__fl_k1`,
        `s`.`__fl_ts` AS `__fl_t`,
        0 AS `__fl_feature`,
        NULL AS `__fl_o0`,
        NULL AS `__fl_o1`,
        NULL AS `__fl_r`,
        `s`.`user_id`,
        `s`.`merchant_id`,
        `s`.`event_timestamp`,
        `s`.`label`,
        `s`.`__fl_row`,
        `s`.`__fl_ts`,
        `s`.`amount`,
        `s`.`merchant`
      FROM `__fl_v0` AS `s`
    ) AS `u`
  ) AS `c`
  WHERE
    `c`.`__fl_feature` = 0
), `__fl_v2` AS (
  SELECT
    `c`.`user_id`,
    `c`.`merchant_id`,
    `c`.`event_timestamp`,
    `c`.`label`,
    `c`.`__fl_row`,
    `c`.`__fl_ts`,
    `c`.`amount`,
    `c`.`merchant`,
    `c`.`txn_count`,
    `c`.`first_seen`,
    `c`.`__fl_latest`.`age` AS `age`
  FROM (
    SELECT
      `u`.`__fl_t`,
      `u`.`__fl_feature`,
      `u`.`user_id`,
      `u`.`merchant_id`,
      `u`.`event_timestamp`,
      `u`.`label`,
      `u`.`__fl_row`,
      `u`.`__fl_ts`,
      `u`.`amount`,
      `u`.`merchant`,
      `u`.`txn_count`,
      `u`.`first_seen`,
      LAST(`u`.`__fl_r`) IGNORE NULLS OVER (
        PARTITION BY `u`.`__fl_k0`
        ORDER BY `u`.`__fl_t` ASC, `u`.`__fl_feature` DESC, `u`.`__fl_o0` ASC
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ) AS `__fl_latest`
    FROM (
      SELECT
        `f`.`user_id` AS `__fl_k0`,
        `f`.`event_ts` AS `__fl_t`,
        1 AS `__fl_feature`,
        `f`.`age` AS `__fl_o0`,
        STRUCT(`f`.`event_ts` AS `__fl_t`, `f`.`age` AS `age`) AS `__fl_r`,
        NULL AS `user_id`,
        NULL AS `merchant_id`,
        NULL AS `event_timestamp`,
        NULL AS `label`,
        NULL AS `__fl_row`,
        NULL AS `__fl_ts`,
        NULL AS `amount`,
        NULL AS `merchant`,
        NULL AS `txn_count`,
        NULL AS `first_seen`
      FROM `fl_snapshot`.`user_profile` AS `f`
      WHERE
        NOT `f`.`user_id` IS NULL AND NOT `f`.`event_ts` IS NULL
      UNION ALL
      SELECT
        `s`.`user_id` AS `__fl_k0`,
        `s`.`__fl_ts` AS `__fl_t`,
        0 AS `__fl_feature`,
        NULL AS `__fl_o0`,
        NULL AS `__fl_r`,
        `s`.`user_id`,
        `s`.`merchant_id`,
        `s`.`event_timestamp`,
        `s`.`label`,
        `s`.`__fl_row`,
        `s`.`__fl_ts`,
        `s`.`amount`,
        `s`.`merchant`,
        `s`.`txn_count`,
        `s`.`first_seen`
      FROM `__fl_v1` AS `s`
    ) AS `u`
  ) AS `c`
  WHERE
    `c`.`__fl_feature` = 0
)
SELECT
  `s`.`user_id` AS `user_id`,
  `s`.`merchant_id` AS `merchant_id`,
  `s`.`event_timestamp` AS `event_timestamp`,
  `s`.`label` AS `label`,
  `s`.`amount` AS `amount`,
  `s`.`merchant` AS `merchant`,
  `s`.`txn_count` AS `txn_count`,
  `s`.`first_seen` AS `first_seen`,
  `s`.`age` AS `age`
FROM `__fl_v2` AS `s`
ORDER BY
  `s`.`__fl_row` NULLS LAST
