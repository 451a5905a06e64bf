{{ config(enabled=feature_layer.examples_enabled()) }}

select
    cast(user_id as bigint) as user_id,
    cast(signup_at as timestamp) as signup_at,
    cast(country as varchar) as country,
    cast(birth_year as integer) as birth_year,
    cast(is_verified as boolean) as is_verified
from {{ feature_layer.project_file(source('raw', 'users')) }}
