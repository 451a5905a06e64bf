{#-
    Point-in-time-safe rolling aggregations over event time.

    rolling_agg('sum', 'amount', partition_by=['user_id'], order_by='occurred_at', window='24h')
    renders

        SUM(amount) OVER (PARTITION BY user_id ORDER BY occurred_at
                          RANGE BETWEEN (INTERVAL '24 hours' - INTERVAL '1 microsecond') PRECEDING
                          AND CURRENT ROW)

    For a row at time t the frame holds the rows of the same partition with an event time
    in the half-open window (t - window, t]: an event exactly one window old has left the
    window, and events at t itself (ties) are all included, never anything later than t.
    `window=none` aggregates all history up to and including t.
    Works on DuckDB and PostgreSQL (11+); other adapters can override
    `<adapter>__rolling_window_frame` through adapter.dispatch.
-#}

{% macro rolling_agg(agg, column, partition_by, order_by, window, data_type=none) %}
    {{- return(adapter.dispatch('rolling_agg', 'feature_layer')(agg, column, partition_by, order_by, window, data_type)) -}}
{% endmacro %}

{% macro default__rolling_agg(agg, column, partition_by, order_by, window, data_type) %}
    {%- set allowed = ['count', 'sum', 'avg', 'min', 'max'] -%}
    {%- if agg is not string or (agg | lower) not in allowed -%}
        {{ exceptions.raise_compiler_error(
            "feature_layer.rolling_agg: agg=" ~ (agg | tojson) ~ " is not supported. "
            ~ "Use one of: " ~ (allowed | join(', ')) ~ ".") }}
    {%- endif -%}
    {%- if column is not string or (column | trim) == '' -%}
        {{ exceptions.raise_compiler_error(
            "feature_layer.rolling_agg: column=" ~ (column | tojson) ~ " must be a non-empty SQL expression, "
            ~ "e.g. 'amount' (or '*' with agg='count').") }}
    {%- endif -%}
    {%- if (column | trim) == '*' and (agg | lower) != 'count' -%}
        {{ exceptions.raise_compiler_error(
            "feature_layer.rolling_agg: column='*' only works with agg='count', got agg=" ~ (agg | tojson) ~ ".") }}
    {%- endif -%}
    {%- set keys = feature_layer._column_list(partition_by, 'partition_by', 'rolling_agg') -%}
    {%- if order_by is not string or (order_by | trim) == '' -%}
        {{ exceptions.raise_compiler_error(
            "feature_layer.rolling_agg: order_by=" ~ (order_by | tojson) ~ " must name the event-time column, "
            ~ "e.g. order_by='occurred_at'.") }}
    {%- endif -%}
    {%- set expression = (agg | upper) ~ "(" ~ (column | trim) ~ ")" -%}
    {%- set over -%}
        OVER ({% if keys %}PARTITION BY {{ keys | join(', ') }} {% endif %}ORDER BY {{ order_by | trim }} {{ feature_layer.rolling_window_frame(window, 'rolling_agg') }})
    {%- endset -%}
    {%- if data_type is none -%}
        {{- return(expression ~ " " ~ over) -}}
    {%- else -%}
        {{- return("CAST(" ~ expression ~ " " ~ over ~ " AS " ~ feature_layer.portable_type(data_type) ~ ")") -}}
    {%- endif -%}
{% endmacro %}


{% macro rolling_window_frame(window, macro_name='rolling_agg') %}
    {{- return(adapter.dispatch('rolling_window_frame', 'feature_layer')(window, macro_name)) -}}
{% endmacro %}

{% macro default__rolling_window_frame(window, macro_name) %}
    {%- if window is none -%}
        {{- return("RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW") -}}
    {%- endif -%}
    {%- set seconds = feature_layer.duration_seconds(window, 'window', 'feature_layer.' ~ macro_name) -%}
    {{- return("RANGE BETWEEN (" ~ feature_layer.interval_literal(seconds) ~ " - INTERVAL '1 microsecond') PRECEDING AND CURRENT ROW") -}}
{% endmacro %}


{% macro _column_list(columns, argument, macro_name) %}
    {#- Accept one column name or a list of them; fail naming the argument otherwise. -#}
    {%- if columns is string -%}
        {%- set columns = [columns] -%}
    {%- endif -%}
    {%- if columns is not iterable or columns is mapping -%}
        {{ exceptions.raise_compiler_error(
            "feature_layer." ~ macro_name ~ ": " ~ argument ~ "=" ~ (columns | tojson) ~ " must be a column name "
            ~ "or a list of column names, e.g. ['user_id'].") }}
    {%- endif -%}
    {%- for column in columns -%}
        {%- if column is not string or (column | trim) == '' -%}
            {{ exceptions.raise_compiler_error(
                "feature_layer." ~ macro_name ~ ": " ~ argument ~ " holds " ~ (column | tojson)
                ~ "; every entry must be a non-empty column name, e.g. ['user_id', 'merchant_id'].") }}
        {%- endif -%}
    {%- endfor -%}
    {{- return(columns | map('trim') | list) -}}
{% endmacro %}


{% macro spark__rolling_window_frame(window, macro_name) %}
    {#- Spark wants a literal frame bound: the window less one microsecond, as DAY TO SECOND. -#}
    {%- if window is none -%}
        {{- return("RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW") -}}
    {%- endif -%}
    {%- set micros = feature_layer.duration_seconds(window, 'window', 'feature_layer.' ~ macro_name) * 1000000 - 1 -%}
    {%- set seconds = micros // 1000000 -%}
    {%- set bound = "%d %02d:%02d:%02d.%06d" | format(seconds // 86400, (seconds % 86400) // 3600, (seconds % 3600) // 60, seconds % 60, micros % 1000000) -%}
    {{- return("RANGE BETWEEN INTERVAL '" ~ bound ~ "' DAY TO SECOND PRECEDING AND CURRENT ROW") -}}
{% endmacro %}
