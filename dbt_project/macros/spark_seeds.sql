{#- Seeds on Spark: dbt-spark's session method formats seed values into its INSERT as quoted text, so an empty
    cell arrives as the string 'None' and an apostrophe ends the literal. Rendered here as SQL literals
    instead: NULL for an empty cell, escaped text, true/false, numbers as written. -#}
{% macro spark__load_csv_rows(model, agate_table) %}
    {%- set column_override = model['config'].get('column_types', {}) -%}
    {%- set rows = [] -%}
    {%- for row in agate_table.rows -%}
        {%- set values = [] -%}
        {%- for value in row -%}
            {%- set column = agate_table.column_names[loop.index0] -%}
            {%- set type = column_override.get(column, adapter.convert_type(agate_table, loop.index0)) -%}
            {%- if value is none -%}
                {%- set literal = 'null' -%}
            {%- elif value is sameas true or value is sameas false -%}
                {%- set literal = 'true' if value else 'false' -%}
            {%- elif value is number -%}
                {%- set literal = value | string -%}
            {%- else -%}
                {%- set literal = "'" ~ (value | string | replace('\\', '\\\\') | replace("'", "\\'")) ~ "'" -%}
            {%- endif -%}
            {%- do values.append('cast(' ~ literal ~ ' as ' ~ type ~ ')') -%}
        {%- endfor -%}
        {%- do rows.append('(' ~ values | join(', ') ~ ')') -%}
    {%- endfor -%}
    {%- if rows -%}
        {%- call statement('_') -%}
            insert into {{ this.render() }} values {{ rows | join(',\n') }}
        {%- endcall -%}
    {%- endif -%}
    {{ return('insert into ' ~ this.render() ~ ' values (...)') }}
{% endmacro %}
