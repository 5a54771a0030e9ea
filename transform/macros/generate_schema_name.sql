{#
  Models go into the schema they name (`staging`, `marts`), not dbt's default
  `<target schema>_<custom schema>` (`analytics_staging`): the README, the
  docs and analysts' queries refer to these names as they are.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
