{{ config(enabled=feature_layer.examples_enabled()) }}

{#- One row per card payment: what the card holder's recent activity looked like at that
    instant, including the payment itself (known when it is authorised). -#}
{%- set by_user = {'partition_by': ['user_id'], 'order_by': 'occurred_at'} %}

with transactions as (
    select * from {{ ref('stg_transactions') }}
)

select
    user_id,
    occurred_at,
    created_at,
    transaction_id,
    amount,
    is_online,
    {{ feature_layer.rolling_agg('count', '*', window='1h', data_type='bigint', **by_user) }} as txn_count_1h,
    {{ feature_layer.rolling_agg('count', '*', window='24h', data_type='bigint', **by_user) }} as txn_count_24h,
    {{ feature_layer.rolling_agg('count', '*', window='7d', data_type='bigint', **by_user) }} as txn_count_7d,
    {{ feature_layer.rolling_agg('sum', 'amount', window='24h', data_type='double precision', **by_user) }} as amount_sum_24h,
    {{ feature_layer.rolling_agg('avg', 'amount', window='7d', data_type='double precision', **by_user) }} as amount_avg_7d,
    {{ feature_layer.rolling_agg('max', 'amount', window='30d', data_type='double precision', **by_user) }} as amount_max_30d,
    {{ feature_layer.rolling_agg('sum', 'case when is_online then 1 else 0 end', window='24h', data_type='bigint', **by_user) }} as online_txn_count_24h,
    amount / {{ feature_layer.rolling_agg('avg', 'amount', window='30d', **by_user) }} as amount_to_avg_30d,
    {{ feature_layer.seconds_between(
        'lag(occurred_at) over (partition by user_id order by occurred_at)', 'occurred_at'
    ) }} as seconds_since_previous_txn
from transactions
