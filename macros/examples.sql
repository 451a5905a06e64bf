{% macro examples_enabled() %}
    {#-
        True when the example fraud models should be built: by default only when this
        project is the root project, so a project that installs feature_layer as a dbt
        package gets the macros without the example models, tests and exposure.
        Override in the installing project with `vars: {feature_layer_examples: true}`.
    -#}
    {%- set enabled = var('feature_layer_examples', project_name == 'feature_layer') -%}
    {%- if enabled is string -%}
        {%- set enabled = (enabled | trim | lower) in ['true', '1', 'yes', 'on'] -%}
    {%- endif -%}
    {{- return(enabled is true or (enabled is number and enabled != 0)) -}}
{% endmacro %}
