{{ config(enabled=feature_layer.examples_enabled()) }}

select
    cast(transaction_id as bigint) as transaction_id,
    cast(reported_at as timestamp) as reported_at,
    cast(reason as varchar) as reason,
    reason in ('fraud', 'stolen_card') as is_fraud
from {{ feature_layer.project_file(source('raw', 'chargebacks')) }}
