{#- Incremental models over the current version of a FHIR resource type.

    A resource with a version loaded (load_seq) after the newest version such a model holds may have changed
    or gone (amended, deleted, retracted, no longer final): the pre-hook removes its row, the model re-reads
    the current version of every such resource, and dbt's delete+insert merges the result. Rows whose
    resource did not change are never re-read, so a night costs what the night's data costs. Quarantine
    verdicts change without a new version, so they are applied downstream, never in these models. -#}

{% macro revised_resources(versions_source) -%}
    select resource_id from {{ source('fhir', versions_source) }}
    where load_seq > (select coalesce(max(load_seq), -1) from {{ this }})
{%- endmacro %}

{% macro delete_revised_resources(versions_source, id_column) -%}
    {%- if is_incremental() -%}
    delete from {{ this }} where {{ id_column }} in ({{ revised_resources(versions_source) }})
    {%- endif -%}
{%- endmacro %}
