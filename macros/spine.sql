{% macro day_spine(start, end) %}
    {#- A query with one row per day from `start` to `end` (timestamp expressions,
        inclusive) in a single column `day` of type timestamp. -#}
    {{- return(adapter.dispatch('day_spine', 'feature_layer')(start, end)) -}}
{% endmacro %}

{% macro default__day_spine(start, end) -%}
    select cast(generate_series({{ start }}, {{ end }}, interval '1 day') as timestamp) as day
{%- endmacro %}

{% macro duckdb__day_spine(start, end) -%}
    select cast(unnest(generate_series({{ start }}, {{ end }}, interval '1 day')) as timestamp) as day
{%- endmacro %}

{% macro spark__day_spine(start, end) -%}
    select explode(sequence(cast({{ start }} as timestamp), cast({{ end }} as timestamp), interval 1 day)) as day
{%- endmacro %}
