-- snapshot: tests/test_point_in_time_sql.py::one_view_ttl_created_at [spark]
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
)
SELECT
  `s`.`user_id` AS `user_id`,
  `s`.`merchant_id` AS `merchant_id`,
  `s`.`event_timestamp` AS `event_timestamp`,
  `s`.`label` AS `label`,
  `b0`.`__fl_best`.`amount` AS `amount`,
  `b0`.`__fl_best`.`merchant` AS `merchant`
FROM `__fl_spine` AS `s`
LEFT JOIN `__fl_b0` AS `b0`
  ON `s`.`user_id` = `b0`.`__fl_rk0` AND `s`.`__fl_ts` = `b0`.`__fl_ts`
ORDER BY
  `s`.`__fl_row` NULLS LAST
