{{ config(
    materialized=incremental_where_supported(),
    unique_key='session_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    pre_hook="{{ delete_revised_resources('procedure_versions', 'session_id') }}",
) }}
-- Psychotherapy sessions: a psychotherapy CPT code; modality from the category or code codings.
-- Incremental (macros/incremental.sql); quarantined sessions are left out by int_psychotherapy_sessions_assigned.
with procedures as (
    select * from {{ ref('stg_fhir__procedures') }}
    where procedure_status = 'completed' and performed_at is not null
    {% if is_incremental() -%}
        and {{ revised_filter('procedure_versions', 'procedure_id') }}
    {%- endif %}
),

cpt as (
    select procedure_id, coding.code as cpt_code, codes.minutes, codes.is_add_on
    from (select procedure_id, {{ unnest_list('codings') }} as coding from procedures) as c
    inner join {{ ref('psychotherapy_procedure_codes') }} as codes
        on coding.system = codes.code_system and coding.code = codes.code
    qualify row_number() over (partition by procedure_id order by codes.is_add_on, codes.code) = 1
),

modality as (
    select procedure_id, modalities.modality
    from (
        select procedure_id, {{ unnest_list('category_codings') }} as coding from procedures
        union all
        select procedure_id, {{ unnest_list('codings') }} as coding from procedures
    ) as c
    inner join {{ ref('psychotherapy_modality_codes') }} as modalities
        on coding.system = modalities.code_system and coding.code = modalities.code
    qualify row_number() over (partition by procedure_id order by modalities.modality) = 1
)

select
    procedures.procedure_id as session_id,
    procedures.patient_id,
    cpt.cpt_code,
    cpt.minutes,
    coalesce(modality.modality, 'unspecified') as modality,
    procedures.performed_at as session_at,
    {{ local_date('procedures.performed_at') }} as session_date,
    procedures.load_seq
from procedures
inner join cpt on procedures.procedure_id = cpt.procedure_id
left join modality on procedures.procedure_id = modality.procedure_id
-- add-on codes bill psychotherapy inside another visit: still a session
