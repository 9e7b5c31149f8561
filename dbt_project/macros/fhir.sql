{#- Small FHIR helpers shared by the staging models. -#}

{#- The id part of a reference ("Patient/123", "https://ehr/fhir/Patient/123" or "urn:uuid:123"). -#}
{% macro fhir_reference_id(json_col, path, resource_type) -%}
    regexp_extract({{ json_text(json_col, path) }}, '(?:{{ resource_type }}/|urn:uuid:)([^/]+)$', 1)
{%- endmacro %}

{#- A list of {system, code, display} structs from a CodeableConcept's coding array. -#}
{% macro fhir_codings(json_col, path) -%}
    {{ json_codings(json_col, path) }}
{%- endmacro %}

{#- An instant for a FHIR dateTime string. Date-only values become the clinic-local midnight of that day
    (so a date-only assessment on the first infusion's day sorts before the infusion); partial dates
    (YYYY or YYYY-MM) cannot be placed and stay NULL. -#}
{% macro fhir_datetime(expr) -%}
    case
        when length({{ expr }}) = 10 then {{ clinic_wall_clock_to_instant('cast(try_cast(' ~ expr ~ ' as date) as timestamp)') }}
        when length({{ expr }}) > 10 then try_cast({{ expr }} as {{ instant_type() }})
    end
{%- endmacro %}

{% macro fhir_precision(expr) -%}
    case when {{ expr }} is null then null when length({{ expr }}) = 4 then 'year' when length({{ expr }}) = 7 then 'month'
         when length({{ expr }}) = 10 then 'day' else 'time' end
{%- endmacro %}

{#- The clinic-local calendar date of an instant. -#}
{% macro local_date(ts) -%}
    cast({{ instant_to_clinic_wall_clock(ts) }} as date)
{%- endmacro %}

{#- Leave out records the quality gate quarantined (quality.quarantined_records, rewritten each run). -#}
{% macro not_quarantined(resource_type, id_column) -%}
    {{ id_column }} not in (
        select resource_id from {{ source('quality', 'quarantined_records') }}
        where resource_type = '{{ resource_type }}'
    )
{%- endmacro %}

{#- Leave out the records of a patient whose Patient resource the gate quarantined (an invalid birth date or
    gender): the patient's data waits, visibly, until the EHR corrects the record. -#}
{% macro patient_not_quarantined(patient_column) -%}
    {{ patient_column }} not in (
        select resource_id from {{ source('quality', 'quarantined_records') }}
        where resource_type = 'Patient'
    )
{%- endmacro %}

{#- The ids of the rows of `relation` with any coding in the value-set seed `value_set` (code_system, code). -#}
{% macro ids_coded_in(relation, id_column, codings_column, value_set) -%}
    select distinct coded.{{ id_column }}
    from (select {{ id_column }}, {{ unnest_list(codings_column) }} as coding from {{ relation }}) as coded
    inner join {{ ref(value_set) }} as value_set
        on coded.coding.system = value_set.code_system and coded.coding.code = value_set.code
{%- endmacro %}
