-- Ketamine administrations: a coding in the value-set seed, else the medication text naming ketamine.
with administrations as (
    select * from {{ ref('stg_fhir__medication_administrations') }}
    where administration_status in ('completed', 'in-progress') and started_at is not null
        and {{ not_quarantined('MedicationAdministration', 'medication_administration_id') }}
),

codings as (
    select medication_administration_id, unnest(medication_codings) as coding from administrations
),

coded_ketamine as (
    select distinct codings.medication_administration_id
    from codings
    inner join {{ ref('ketamine_medication_codes') }} as codes
        on coding.system = codes.code_system and coding.code = codes.code
),

ketamine as (
    select administrations.*
    from administrations
    left join coded_ketamine using (medication_administration_id)
    where coded_ketamine.medication_administration_id is not null
        or administrations.medication_text ilike '{{ var("ketamine_text_pattern") }}'
        or list_bool_or(list_transform(administrations.medication_codings,
                                       lambda c: c.display ilike '{{ var("ketamine_text_pattern") }}'))
),

weights as (
    select patient_id, measured_at, weight_kg from {{ ref('int_body_weights_measured') }}
    where {{ not_quarantined('Observation', 'observation_id') }}
),

with_prior_weight as (
    select ketamine.*, weights.weight_kg as prior_weight_kg
    from ketamine
    asof left join weights
        on ketamine.patient_id = weights.patient_id and ketamine.started_at >= weights.measured_at
),

with_weight as (
    -- no weight before the infusion: the first one recorded after it
    select with_prior_weight.*, weights.weight_kg as later_weight_kg
    from with_prior_weight
    asof left join weights
        on with_prior_weight.patient_id = weights.patient_id and with_prior_weight.started_at <= weights.measured_at
)

select
    medication_administration_id as infusion_id,
    patient_id,
    started_at,
    ended_at,
    {{ local_date('started_at') }} as infusion_date,
    date_diff('minute', started_at, ended_at) as duration_minutes,
    route_code,
    coalesce(prior_weight_kg, later_weight_kg) as weight_kg,
    case when dose_unit = 'mg' then dose_value
         when dose_unit = 'mg/kg' then dose_value * coalesce(prior_weight_kg, later_weight_kg) end as dose_mg,
    case when dose_unit = 'mg/kg' then dose_value
         when dose_unit = 'mg' then round(dose_value / coalesce(prior_weight_kg, later_weight_kg), 3) end as dose_mg_per_kg
from with_weight
