-- snapshot: tests/test_point_in_time_sql.py::three_views_full_names [spark]
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
    END AS `user_activity__amount`
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
        STRUCT(`f`.`event_ts` AS `__fl_t`, `f`.`amount` AS `amount`) AS `__fl_r`,
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
    `c`.`user_activity__amount`,
    CASE
      WHEN `c`.`__fl_latest`.`__fl_t` >= `c`.`__fl_t` - INTERVAL '36' HOUR
      THEN `c`.`__fl_latest`.`txn_count`
    END AS `user_merchant__txn_count`,
    CASE
      WHEN `c`.`__fl_latest`.`__fl_t` >= `c`.`__fl_t` - INTERVAL '36' HOUR
      THEN `c`.`__fl_latest`.`first_seen`
    END AS `user_merchant__first_seen`
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
      `u`.`user_activity__amount`,
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
        NULL AS `user_activity__amount`
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
        `s`.`user_activity__amount`
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
    `c`.`user_activity__amount`,
    `c`.`user_merchant__txn_count`,
    `c`.`user_merchant__first_seen`,
    `c`.`__fl_latest`.`age` AS `user_profile__age`
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
      `u`.`user_activity__amount`,
      `u`.`user_merchant__txn_count`,
      `u`.`user_merchant__first_seen`,
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
        NULL AS `user_activity__amount`,
        NULL AS `user_merchant__txn_count`,
        NULL AS `user_merchant__first_seen`
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
        `s`.`user_activity__amount`,
        `s`.`user_merchant__txn_count`,
        `s`.`user_merchant__first_seen`
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
  `s`.`user_activity__amount` AS `user_activity__amount`,
  `s`.`user_merchant__txn_count` AS `user_merchant__txn_count`,
  `s`.`user_merchant__first_seen` AS `user_merchant__first_seen`,
  `s`.`user_profile__age` AS `user_profile__age`
FROM `__fl_v2` AS `s`
ORDER BY
  `s`.`__fl_row` NULLS LAST
