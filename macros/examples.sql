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

{% macro project_file(relation) %}
    {#-
        A dbt-duckdb source read from a file (`external_location`), its relative path
        anchored at the project folder: dbt resolves it against the directory dbt runs in
        (the project's own with `dbt build`, another one with `--project-dir`). Any other
        relation (absolute paths, URLs, function calls, PostgreSQL tables) is returned as is.
        The staging models that use it are tables, so the file is read once at build time
        and the warehouse never depends on the working directory of whoever opens it.
    -#}
    {%- set location = relation.external if relation.external is defined else none -%}
    {%- if location is string and location.startswith("'") and location[1:2] not in ['/', '~']
            and ':' not in location -%}
        {{- return("'" ~ adapter.config.project_root ~ "/" ~ location[1:]) -}}
    {%- endif -%}
    {{- return(relation) -}}
{% endmacro %}
