{{ config(enabled=feature_layer.examples_enabled()) }}

select
    cast(merchant_id as bigint) as merchant_id,
    cast(category as varchar) as category,
    cast(country as varchar) as country,
    cast(created_at as timestamp) as created_at
from {{ feature_layer.project_file(source('raw', 'merchants')) }}
