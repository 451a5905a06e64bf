-- snapshot: tests/test_point_in_time_sql.py::uploaded_entities [spark]
-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py
WITH `__fl_spine` AS (
  SELECT
    `src`.*
  FROM `__fl_entities_0` AS `src`
), `__fl_v0` AS (
  SELECT
    `c`.`user_id`,
    `c`.`event_timestamp`,
    `c`.`is_fraud`,
    `c`.`__fl_row`,
    `c`.`__fl_latest`.`age` AS `age`
  FROM (
    SELECT
      `u`.`__fl_t`,
      `u`.`__fl_feature`,
      `u`.`user_id`,
      `u`.`event_timestamp`,
      `u`.`is_fraud`,
      `u`.`__fl_row`,
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
        NULL AS `event_timestamp`,
        NULL AS `is_fraud`,
        NULL AS `__fl_row`
      FROM `fl_snapshot`.`user_profile` AS `f`
      WHERE
        NOT `f`.`user_id` IS NULL AND NOT `f`.`event_ts` IS NULL
      UNION ALL
      SELECT
        `s`.`user_id` AS `__fl_k0`,
        `s`.`event_timestamp` AS `__fl_t`,
        0 AS `__fl_feature`,
        NULL AS `__fl_o0`,
        NULL AS `__fl_r`,
        `s`.`user_id`,
        `s`.`event_timestamp`,
        `s`.`is_fraud`,
        `s`.`__fl_row`
      FROM `__fl_spine` AS `s`
    ) AS `u`
  ) AS `c`
  WHERE
    `c`.`__fl_feature` = 0
)
SELECT
  `s`.`user_id` AS `user_id`,
  `s`.`event_timestamp` AS `event_timestamp`,
  `s`.`is_fraud` AS `is_fraud`,
  `s`.`age` AS `age`
FROM `__fl_v0` AS `s`
ORDER BY
  `s`.`__fl_row` NULLS LAST
