-- snapshot: tests/test_point_in_time_sql.py::indexed_views [spark]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH `__fl_spine` AS (
  SELECT
    `src`.*,
    CAST(`src`.`event_timestamp` AS TIMESTAMP) AS `__fl_ts`,
    MONOTONICALLY_INCREASING_ID() AS `__fl_row`
  FROM `fl_snapshot`.`entities` AS `src`
), `__fl_spine_keys` AS (
  SELECT
    `src`.*,
    CAST(`src`.`event_timestamp` AS TIMESTAMP) AS `__fl_ts`,
    NULL AS `__fl_row`
  FROM `fl_snapshot`.`entities` AS `src`
), `__fl_b0` AS (
  SELECT
    `s`.`user_id` AS `__fl_rk0`,
    `s`.`__fl_ts`,
    MAX(
      STRUCT(
        `f`.`event_ts` AS `__fl_o0`,
        `f`.`created_ts` AS `__fl_o1`,
        `f`.`amount` AS `amount`,
        `f`.`merchant` AS `merchant`
      )
    ) AS `__fl_best`
  FROM `fl_snapshot`.`user_activity` AS `f`
  JOIN (
    SELECT
      `s`.*,
      `__fl_e`.`__fl_bk`
    FROM `__fl_spine_keys` AS `s`
    LATERAL VIEW
    EXPLODE(
      SEQUENCE(
        UNIX_MICROS(CAST(`s`.`__fl_ts` - INTERVAL '30' DAY AS TIMESTAMP)) DIV 5184000000000,
        UNIX_MICROS(CAST(`s`.`__fl_ts` AS TIMESTAMP)) DIV 5184000000000
      )
    ) __fl_e AS `__fl_bk`
  ) AS `s`
    ON `f`.`user_id` = `s`.`user_id`
    AND UNIX_MICROS(CAST(`f`.`event_ts` AS TIMESTAMP)) DIV 5184000000000 = `s`.`__fl_bk`
    AND `f`.`event_ts` <= `s`.`__fl_ts`
    AND `f`.`event_ts` >= `s`.`__fl_ts` - INTERVAL '30' DAY
  GROUP BY
    `s`.`user_id`,
    `s`.`__fl_ts`
), `__fl_b1` AS (
  SELECT
    `s`.`user_id` AS `__fl_rk0`,
    `s`.`merchant_id` AS `__fl_rk1`,
    `s`.`__fl_ts`,
    MAX(
      STRUCT(
        `f`.`event_ts` AS `__fl_o0`,
        `f`.`txn_count` AS `txn_count`,
        `f`.`first_seen` AS `first_seen`
      )
    ) AS `__fl_best`
  FROM `fl_snapshot`.`user_merchant` AS `f`
  JOIN (
    SELECT
      `s`.*,
      `__fl_e`.`__fl_bk`
    FROM `__fl_spine_keys` AS `s`
    LATERAL VIEW
    EXPLODE(
      SEQUENCE(
        UNIX_MICROS(CAST(`s`.`__fl_ts` - INTERVAL '36' HOUR AS TIMESTAMP)) DIV 259200000000,
        UNIX_MICROS(CAST(`s`.`__fl_ts` AS TIMESTAMP)) DIV 259200000000
      )
    ) __fl_e AS `__fl_bk`
  ) AS `s`
    ON `f`.`user_id` = `s`.`user_id`
    AND `f`.`merchant_id` = `s`.`merchant_id`
    AND UNIX_MICROS(CAST(`f`.`event_ts` AS TIMESTAMP)) DIV 259200000000 = `s`.`__fl_bk`
    AND `f`.`event_ts` <= `s`.`__fl_ts`
    AND `f`.`event_ts` >= `s`.`__fl_ts` - INTERVAL '36' HOUR
  GROUP BY
    `s`.`user_id`,
    `s`.`merchant_id`,
    `s`.`__fl_ts`
), `__fl_v2` AS (
  SELECT
    `c`.`user_id`,
    `c`.`merchant_id`,
    `c`.`event_timestamp`,
    `c`.`label`,
    `c`.`__fl_row`,
    `c`.`__fl_ts`,
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
        NULL AS `__fl_ts`
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
        `s`.`__fl_ts`
      FROM `__fl_spine` AS `s`
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
  `b0`.`__fl_best`.`amount` AS `amount`,
  `b0`.`__fl_best`.`merchant` AS `merchant`,
  `b1`.`__fl_best`.`txn_count` AS `txn_count`,
  `b1`.`__fl_best`.`first_seen` AS `first_seen`,
  `s`.`age` AS `age`
FROM `__fl_v2` AS `s`
LEFT JOIN `__fl_b0` AS `b0`
  ON `s`.`user_id` = `b0`.`__fl_rk0` AND `s`.`__fl_ts` = `b0`.`__fl_ts`
LEFT JOIN `__fl_b1` AS `b1`
  ON `s`.`user_id` = `b1`.`__fl_rk0`
  AND `s`.`merchant_id` = `b1`.`__fl_rk1`
  AND `s`.`__fl_ts` = `b1`.`__fl_ts`
ORDER BY
  `s`.`__fl_row` NULLS LAST
