{{ config(enabled=feature_layer.examples_enabled()) }}

{#- The entity dataframe for training the fraud model: one row per payment, with the
    entity keys, the instant the prediction is made (occurred_at) and the label. -#}

select
    t.transaction_id,
    t.user_id,
    t.merchant_id,
    t.occurred_at,
    coalesce(c.is_fraud, false) as is_fraud
from {{ ref('stg_transactions') }} as t
left join {{ ref('stg_chargebacks') }} as c on c.transaction_id = t.transaction_id
