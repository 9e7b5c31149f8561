{#- SQL that differs between the engines the project builds on: DuckDB (the default) and Apache Spark
    (`outcomes transform --engine spark`). Models call these and stay one text; each macro has one
    implementation per adapter, chosen by dbt's dispatch. -#}

{#- A JSON value at `path` as text (NULL when absent): scalars unquoted, objects and arrays as JSON. -#}
{% macro json_text(json_col, path) -%}{{ return(adapter.dispatch('json_text')(json_col, path)) }}{%- endmacro %}
{% macro default__json_text(json_col, path) -%}json_extract_string({{ json_col }}, '{{ path }}'){%- endmacro %}
{% macro spark__json_text(json_col, path) -%}get_json_object({{ json_col }}, '{{ path }}'){%- endmacro %}

{#- A list of {system, code, display} structs from a JSON array of codings at `path`. -#}
{% macro json_codings(json_col, path) -%}{{ return(adapter.dispatch('json_codings')(json_col, path)) }}{%- endmacro %}
{% macro default__json_codings(json_col, path) -%}
    from_json(json_extract({{ json_col }}, '{{ path }}'), '[{"system":"VARCHAR","code":"VARCHAR","display":"VARCHAR"}]')
{%- endmacro %}
{% macro spark__json_codings(json_col, path) -%}
    from_json(get_json_object({{ json_col }}, '{{ path }}'), 'array<struct<system:string,code:string,display:string>>')
{%- endmacro %}

{#- The timestamp type that holds an instant. -#}
{% macro instant_type() -%}{{ return(adapter.dispatch('instant_type')()) }}{%- endmacro %}
{% macro default__instant_type() -%}timestamptz{%- endmacro %}
{% macro spark__instant_type() -%}timestamp{%- endmacro %}

{#- The instant of a wall-clock time (a timestamp without zone) in the clinic's time zone. -#}
{% macro clinic_wall_clock_to_instant(wall_clock) -%}{{ return(adapter.dispatch('clinic_wall_clock_to_instant')(wall_clock)) }}{%- endmacro %}
{% macro default__clinic_wall_clock_to_instant(wall_clock) -%}timezone('{{ var("clinic_timezone") }}', {{ wall_clock }}){%- endmacro %}
{% macro spark__clinic_wall_clock_to_instant(wall_clock) -%}to_utc_timestamp({{ wall_clock }}, '{{ var("clinic_timezone") }}'){%- endmacro %}

{#- The clinic's wall-clock time (a timestamp without zone) at an instant. -#}
{% macro instant_to_clinic_wall_clock(instant) -%}{{ return(adapter.dispatch('instant_to_clinic_wall_clock')(instant)) }}{%- endmacro %}
{% macro default__instant_to_clinic_wall_clock(instant) -%}timezone('{{ var("clinic_timezone") }}', {{ instant }}){%- endmacro %}
{% macro spark__instant_to_clinic_wall_clock(instant) -%}from_utc_timestamp({{ instant }}, '{{ var("clinic_timezone") }}'){%- endmacro %}

{#- Whole days, or minutes, between two dates or instants: the number of day (minute) boundaries crossed, as
    DuckDB's date_diff counts them (Spark's timestampdiff counts whole elapsed units, so both ends are
    truncated first). `unit`: 'day' or 'minute'. -#}
{% macro units_between(unit, start, end) -%}{{ return(adapter.dispatch('units_between')(unit, start, end)) }}{%- endmacro %}
{% macro default__units_between(unit, start, end) -%}date_diff('{{ unit }}', {{ start }}, {{ end }}){%- endmacro %}
{% macro spark__units_between(unit, start, end) -%}
    timestampdiff({{ unit }}, date_trunc('{{ unit }}', {{ start }}), date_trunc('{{ unit }}', {{ end }}))
{%- endmacro %}

{#- One row per element of a list, in a select list (no row for an empty or NULL list). -#}
{% macro unnest_list(list) -%}{{ return(adapter.dispatch('unnest_list')(list)) }}{%- endmacro %}
{% macro default__unnest_list(list) -%}unnest({{ list }}){%- endmacro %}
{% macro spark__unnest_list(list) -%}explode({{ list }}){%- endmacro %}

{#- Whether any element of a list satisfies `predicate`, written over the element named `element`. -#}
{% macro list_any(list, element, predicate) -%}{{ return(adapter.dispatch('list_any')(list, element, predicate)) }}{%- endmacro %}
{% macro default__list_any(list, element, predicate) -%}list_bool_or(list_transform({{ list }}, lambda {{ element }}: {{ predicate }})){%- endmacro %}
{% macro spark__list_any(list, element, predicate) -%}exists({{ list }}, {{ element }} -> {{ predicate }}){%- endmacro %}

{#- Whether a text matches a regular expression anywhere in it. -#}
{% macro regex_matches(text, pattern) -%}{{ return(adapter.dispatch('regex_matches')(text, pattern)) }}{%- endmacro %}
{% macro default__regex_matches(text, pattern) -%}regexp_matches({{ text }}, '{{ pattern }}'){%- endmacro %}
{% macro spark__regex_matches(text, pattern) -%}({{ text }} rlike '{{ pattern }}'){%- endmacro %}

{#- Every column of a relation but those named. -#}
{% macro star_except(columns) -%}{{ return(adapter.dispatch('star_except')(columns)) }}{%- endmacro %}
{% macro default__star_except(columns) -%}* exclude ({{ columns | join(', ') }}){%- endmacro %}
{% macro spark__star_except(columns) -%}* except ({{ columns | join(', ') }}){%- endmacro %}

{#- A random key of 32 hex digits (never derived from an identifier). -#}
{% macro random_key() -%}{{ return(adapter.dispatch('random_key')()) }}{%- endmacro %}
{% macro default__random_key() -%}replace(cast(gen_random_uuid() as string), '-', ''){%- endmacro %}
{% macro spark__random_key() -%}replace(uuid(), '-', ''){%- endmacro %}

{#- Whole units elapsed between two dates (complete years of age, say): DuckDB's date_sub, Spark's timestampdiff. -#}
{% macro whole_units_between(unit, start, end) -%}{{ return(adapter.dispatch('whole_units_between')(unit, start, end)) }}{%- endmacro %}
{% macro default__whole_units_between(unit, start, end) -%}date_sub('{{ unit }}', {{ start }}, {{ end }}){%- endmacro %}
{% macro spark__whole_units_between(unit, start, end) -%}timestampdiff({{ unit }}, {{ start }}, {{ end }}){%- endmacro %}

{#- A relation of the integers 0 .. n-1 in a column named `k`. -#}
{% macro integers_below(n) -%}{{ return(adapter.dispatch('integers_below')(n)) }}{%- endmacro %}
{% macro default__integers_below(n) -%}(select range as k from range({{ n }})){%- endmacro %}
{% macro spark__integers_below(n) -%}(select id as k from range({{ n }})){%- endmacro %}
