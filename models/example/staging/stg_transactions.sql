{{ config(enabled=feature_layer.examples_enabled()) }}

select
    cast(transaction_id as bigint) as transaction_id,
    cast(user_id as bigint) as user_id,
    cast(merchant_id as bigint) as merchant_id,
    cast(amount as double precision) as amount,
    cast(currency as varchar) as currency,
    cast(is_online as boolean) as is_online,
    cast(occurred_at as timestamp) as occurred_at,
    cast(created_at as timestamp) as created_at
from {{ feature_layer.project_file(source('raw', 'transactions')) }}
