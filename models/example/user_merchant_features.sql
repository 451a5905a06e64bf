{{ config(enabled=feature_layer.examples_enabled()) }}

{#- One row per payment, keyed by the (card holder, merchant) pair: how familiar the card
    holder is with this merchant at that instant. -#}
{%- set by_pair = {'partition_by': ['user_id', 'merchant_id'], 'order_by': 'occurred_at'} %}

with transactions as (
    select * from {{ ref('stg_transactions') }}
),

pairs as (
    select
        user_id,
        merchant_id,
        occurred_at,
        created_at,
        {{ feature_layer.rolling_agg('count', '*', window='30d', data_type='bigint', **by_pair) }} as txn_count_30d,
        {{ feature_layer.rolling_agg('sum', 'amount', window='30d', data_type='double precision', **by_pair) }} as amount_sum_30d,
        {{ feature_layer.rolling_agg('count', '*', window=none, data_type='bigint', **by_pair) }} as txn_count_total,
        {{ feature_layer.rolling_agg('min', 'occurred_at', window=none, **by_pair) }} as first_seen_at
    from transactions
)

select
    user_id,
    merchant_id,
    occurred_at,
    created_at,
    txn_count_30d,
    amount_sum_30d,
    txn_count_total,
    txn_count_total = 1 as is_first_payment,
    first_seen_at,
    {{ feature_layer.seconds_between('first_seen_at', 'occurred_at') }} / 86400.0 as days_since_first_seen
from pairs
