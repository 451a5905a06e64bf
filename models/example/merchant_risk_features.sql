{{ config(enabled=feature_layer.examples_enabled(), event_time='as_of') }}

{#- One row per merchant and day, stamped with the END of the day (as_of): a value for day D
    is only known once D is over, so a lookup during D sees the previous day's row.
    Chargebacks count on the day they were REPORTED, never on the payment's day, so no
    training row learns about a chargeback before it was filed. -#}
{%- set by_merchant = {'partition_by': ['merchant_id'], 'order_by': 'as_of'} %}

with transactions as (
    select * from {{ ref('stg_transactions') }}
),

chargebacks as (
    select c.*, t.merchant_id
    from {{ ref('stg_chargebacks') }} as c
    inner join transactions as t on t.transaction_id = c.transaction_id
),

merchants as (
    select * from {{ ref('stg_merchants') }}
),

bounds as (
    select
        min(date_trunc('day', created_at)) as first_day,
        (select max(d) from (
            select max(date_trunc('day', occurred_at)) as d from transactions
            union all
            select max(date_trunc('day', reported_at)) as d from chargebacks
        ) as last_days) as last_day
    from merchants
),

days as (
    {{ feature_layer.day_spine('(select first_day from bounds)', '(select last_day from bounds)') }}
),

daily_transactions as (
    select
        merchant_id,
        date_trunc('day', occurred_at) as day,
        count(*) as txn_count,
        sum(amount) as amount_sum
    from transactions
    group by 1, 2
),

daily_chargebacks as (
    select
        merchant_id,
        date_trunc('day', reported_at) as day,
        count(*) as chargeback_count,
        sum(case when is_fraud then 1 else 0 end) as fraud_chargeback_count
    from chargebacks
    group by 1, 2
),

daily as (
    select
        m.merchant_id,
        m.category,
        d.day + interval '1 day' as as_of,
        coalesce(t.txn_count, 0) as txn_count,
        coalesce(t.amount_sum, 0) as amount_sum,
        coalesce(c.chargeback_count, 0) as chargeback_count,
        coalesce(c.fraud_chargeback_count, 0) as fraud_chargeback_count
    from merchants as m
    inner join days as d on d.day >= date_trunc('day', m.created_at)
    left join daily_transactions as t on t.merchant_id = m.merchant_id and t.day = d.day
    left join daily_chargebacks as c on c.merchant_id = m.merchant_id and c.day = d.day
),

rolling as (
    select
        merchant_id,
        as_of,
        category,
        {{ feature_layer.rolling_agg('sum', 'txn_count', window='1d', data_type='bigint', **by_merchant) }} as txn_count_1d,
        {{ feature_layer.rolling_agg('sum', 'txn_count', window='7d', data_type='bigint', **by_merchant) }} as txn_count_7d,
        {{ feature_layer.rolling_agg('sum', 'txn_count', window='30d', data_type='bigint', **by_merchant) }} as txn_count_30d,
        {{ feature_layer.rolling_agg('sum', 'amount_sum', window='30d', data_type='double precision', **by_merchant) }} as amount_sum_30d,
        {{ feature_layer.rolling_agg('sum', 'chargeback_count', window='30d', data_type='bigint', **by_merchant) }} as chargeback_count_30d,
        {{ feature_layer.rolling_agg('sum', 'fraud_chargeback_count', window='30d', data_type='bigint', **by_merchant) }} as fraud_chargeback_count_30d,
        {{ feature_layer.rolling_agg('sum', 'fraud_chargeback_count', window='90d', data_type='bigint', **by_merchant) }} as fraud_chargeback_count_90d
    from daily
)

select
    merchant_id,
    as_of,
    category,
    txn_count_1d,
    txn_count_7d,
    txn_count_30d,
    case when txn_count_30d > 0 then amount_sum_30d / txn_count_30d end as amount_avg_30d,
    chargeback_count_30d,
    fraud_chargeback_count_90d,
    cast(fraud_chargeback_count_30d as {{ feature_layer.portable_type('double precision') }}) / nullif(txn_count_30d, 0) as chargeback_rate_30d,
    fraud_chargeback_count_30d > 0 as had_fraud_30d
from rolling
