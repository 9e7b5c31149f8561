{{ config(
    materialized=incremental_where_supported(),
    unique_key='assessment_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    pre_hook="{{ delete_revised_resources('observation_versions', 'assessment_id') }}",
) }}
-- Observations mapped to instruments through the catalogue seed (any coding may match), final only.
-- Incremental (macros/incremental.sql): a night re-reads only the observations revised since the last run.
-- Quarantined observations are kept here and left out by int_assessments_assigned.
with observations as (
    select * from {{ ref('stg_fhir__observations') }}
    {% if is_incremental() -%}
    where {{ revised_filter('observation_versions', 'observation_id') }}
    {%- endif %}
),

catalogue as (
    select * from {{ ref('instrument_catalogue') }}
),

codings as (
    select observation_id, {{ unnest_list('codings') }} as coding from observations
),

mapped as (
    select
        codings.observation_id,
        catalogue.instrument,
        catalogue.rater,
        catalogue.min_score,
        catalogue.max_score,
        row_number() over (partition by codings.observation_id order by catalogue.instrument) as match_rank
    from codings
    inner join catalogue
        on coding.system = catalogue.code_system and coding.code = catalogue.code
)

select
    observations.observation_id as assessment_id,
    observations.patient_id,
    mapped.instrument,
    mapped.rater,
    observations.value_score as score,
    observations.value_source,
    observations.effective_at as assessed_at,
    observations.effective_precision = 'day' as is_date_only,
    {{ local_date('observations.effective_at') }} as assessed_date,
    observations.performer_type,
    observations.observation_status,
    observations.value_score between mapped.min_score and mapped.max_score as is_in_range,
    observations.last_updated_at,
    observations.load_seq
from observations
inner join mapped on observations.observation_id = mapped.observation_id and mapped.match_rank = 1
-- final / amended / corrected count; preliminary and registered are not results yet
where observations.is_final
    and observations.effective_at is not null
    and observations.value_score is not null
