{#-
    Durations such as 30d, 12h, 90m, 1w2d or 1d12h (units s, m, h, d, w), the same forms
    feature_layer accepts for TTLs in Python (feature_layer.durations.parse_duration).
-#}

{% macro duration_seconds(text, argument='window', macro_name='feature_layer') %}
    {#- Return the number of seconds in a duration string; fail naming `argument`. -#}
    {%- set units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800} -%}
    {%- set cleaned = (text | string).strip().lower() -%}
    {%- if text is none or text is boolean or not modules.re.fullmatch('(\\d+\\s*[smhdw]\\s*)+', cleaned) -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": " ~ argument ~ "=" ~ (text | tojson) ~ " is not a duration. "
            ~ "Use a number followed by a unit (s, m, h, d, w), e.g. '1h', '24h', '7d', '30d' or '1d12h'."
        ) }}
    {%- endif -%}
    {%- set ns = namespace(total=0) -%}
    {%- for part in modules.re.findall('(\\d+)\\s*([smhdw])', cleaned) -%}
        {%- set ns.total = ns.total + (part[0] | int) * units[part[1]] -%}
    {%- endfor -%}
    {%- if ns.total <= 0 -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": " ~ argument ~ "=" ~ (text | tojson) ~ " must be longer than zero, e.g. '1h' or '7d'."
        ) }}
    {%- endif -%}
    {{ return(ns.total) }}
{% endmacro %}


{% macro interval_literal(seconds) %}
    {{- return(adapter.dispatch('interval_literal', 'feature_layer')(seconds)) -}}
{% endmacro %}

{% macro default__interval_literal(seconds) %}
    {#- The largest whole unit keeps compiled SQL readable: 86400 -> INTERVAL '1 days'. -#}
    {%- set seconds = seconds | int -%}
    {%- if seconds % 86400 == 0 -%}
        {{- return("INTERVAL '" ~ (seconds // 86400) ~ " days'") -}}
    {%- elif seconds % 3600 == 0 -%}
        {{- return("INTERVAL '" ~ (seconds // 3600) ~ " hours'") -}}
    {%- elif seconds % 60 == 0 -%}
        {{- return("INTERVAL '" ~ (seconds // 60) ~ " minutes'") -}}
    {%- else -%}
        {{- return("INTERVAL '" ~ seconds ~ " seconds'") -}}
    {%- endif -%}
{% endmacro %}


{% macro seconds_between(start, end) %}
    {#- Seconds from `start` to `end` (two timestamp expressions) as a double. -#}
    {{- return(adapter.dispatch('seconds_between', 'feature_layer')(start, end)) -}}
{% endmacro %}

{% macro default__seconds_between(start, end) -%}
    CAST(EXTRACT(EPOCH FROM ({{ end }} - {{ start }})) AS DOUBLE PRECISION)
{%- endmacro %}

{% macro duckdb__seconds_between(start, end) -%}
    (CAST(epoch_us({{ end }}) - epoch_us({{ start }}) AS DOUBLE) / 1000000.0)
{%- endmacro %}

{% macro spark__seconds_between(start, end) -%}
    (cast(unix_micros(cast({{ end }} as timestamp)) - unix_micros(cast({{ start }} as timestamp)) as double) / 1000000.0)
{%- endmacro %}


{% macro portable_type(name) %}
    {#- `name` (a PostgreSQL/DuckDB spelling such as 'double precision' or 'varchar') in the
        adapter's own spelling. -#}
    {{- return(adapter.dispatch('portable_type', 'feature_layer')(name)) -}}
{% endmacro %}

{% macro default__portable_type(name) %}
    {{- return(name) -}}
{% endmacro %}

{% macro spark__portable_type(name) %}
    {%- set spelled = {'double precision': 'double', 'varchar': 'string', 'text': 'string'} -%}
    {{- return(spelled.get(name | trim | lower, name)) -}}
{% endmacro %}
