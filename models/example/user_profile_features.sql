{{ config(enabled=feature_layer.examples_enabled()) }}

{#- One row per card holder, valid from sign-up on (no TTL: a profile does not expire). -#}

select
    user_id,
    signup_at,
    signup_at as signed_up_at,
    country,
    is_verified,
    birth_year,
    cast(extract(year from signup_at) as integer) - birth_year as age_at_signup
from {{ ref('stg_users') }}
