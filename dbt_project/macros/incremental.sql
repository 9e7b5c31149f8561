{#- Incremental models over the current version of a FHIR resource type.

    A resource with a version loaded (load_seq) after the newest version such a model holds may have changed
    or gone (amended, deleted, retracted, no longer final): the pre-hook removes its row, the model re-reads
    the current version of every such resource, and dbt's delete+insert merges the result. Rows whose
    resource did not change are never re-read, so a night costs what the night's data costs. Quarantine
    verdicts change without a new version, so they are applied downstream, never in these models. -#}

{#- The newest load the model holds; -1 (everything is revised) for a table built before the model became
    incremental, which therefore rebuilds itself once (on_schema_change adds its load_seq column). -#}
{% macro incremental_watermark() -%}
    {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {%- if 'load_seq' in columns -%}
        (select coalesce(max(load_seq), -1) from {{ this }})
    {%- else -%}
        -1
    {%- endif -%}
{%- endmacro %}

{% macro revised_resources(versions_source) -%}
    select resource_id from {{ source('fhir', versions_source) }}
    where load_seq > {{ incremental_watermark() }}
{%- endmacro %}

{% macro delete_revised_resources(versions_source, id_column) -%}
    {%- if is_incremental() -%}
    delete from {{ this }} where {{ id_column }} in ({{ revised_resources(versions_source) }})
    {%- endif -%}
{%- endmacro %}

{#- The filter that keeps only revised resources. The ids are fetched when the model is compiled (before the
    pre-hook runs) and written as a literal list: DuckDB pushes a constant list down through the staging view
    to the raw scan, while a subquery would be applied only after every stored version's JSON was parsed.
    A very long list (a catch-up after weeks) falls back to the subquery. -#}
{% macro revised_filter(versions_source, id_column, max_literal_ids=50000) -%}
    {%- if execute and is_incremental() -%}
        {%- set ids = run_query("select distinct resource_id from (" ~ revised_resources(versions_source) ~ ")").columns[0].values() -%}
        {%- if ids | length == 0 -%}
            false
        {%- elif ids | length <= max_literal_ids -%}
            {{ id_column }} in ({%- for id in ids -%}'{{ id | replace("'", "''") }}'{{ ", " if not loop.last }}{%- endfor -%})
        {%- else -%}
            {{ id_column }} in ({{ revised_resources(versions_source) }})
        {%- endif -%}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- Incremental where the engine can delete the revised rows (DuckDB); a table rebuilt from the lake on each
    run on Spark, whose Parquet tables take no DELETE (the Spark engine rebuilds its catalogue every run). -#}
{% macro incremental_where_supported() -%}
    {{- return('incremental' if target.type != 'spark' else 'table') -}}
{%- endmacro %}
