{{ config(
    materialized=incremental_where_supported(),
    unique_key='observation_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    pre_hook="{{ delete_revised_resources('observation_versions', 'observation_id') }}",
) }}
-- Incremental like int_assessments_scored; quarantined weights are left out by int_infusions_identified.
with observations as (
    select * from {{ ref('stg_fhir__observations') }}
    {% if is_incremental() -%}
    where {{ revised_filter('observation_versions', 'observation_id') }}
    {%- endif %}
),

weight_ids as (
    {{ ids_coded_in('observations', 'observation_id', 'codings', 'body_weight_codes') }}
)

select
    observations.observation_id,
    observations.patient_id,
    observations.effective_at as measured_at,
    case when observations.value_unit in ('g') then observations.value_score / 1000
         when observations.value_unit in ('[lb_av]', 'lb', 'lbs') then observations.value_score * 0.45359237
         else observations.value_score end as weight_kg,
    observations.load_seq
from observations
inner join weight_ids on observations.observation_id = weight_ids.observation_id
where observations.is_final and observations.effective_at is not null and observations.value_score > 0
