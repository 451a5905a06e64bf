{% test unique_combination(model, columns) %}
    {#-
        Fails for every combination of `columns` that appears more than once, e.g. the
        entity keys plus the event time of a feature view (one value per entity and instant).
    -#}
    {%- set columns = feature_layer._column_list(columns, 'columns', 'unique_combination') -%}
    {%- if columns | length == 0 -%}
        {{ exceptions.raise_compiler_error(
            "feature_layer.unique_combination: columns is empty; list the key and event-time columns, "
            ~ "e.g. columns: [user_id, occurred_at].") }}
    {%- endif -%}
    select {{ columns | join(', ') }}, count(*) as occurrences
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}
