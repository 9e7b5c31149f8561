-- Infusions: the ketamine administrations not in quarantine, with the weight for mg/kg doses. Rebuilt whole
-- each night (no JSON is read here): a newly recorded weight can change an old infusion's dose per kg.
with ketamine as (
    select * exclude (load_seq) from {{ ref('int_ketamine_administrations_identified') }}
    where {{ not_quarantined('MedicationAdministration', 'medication_administration_id') }}
        and {{ patient_not_quarantined('patient_id') }}
),

weights as (
    -- two weights at the same instant: the one recorded last (an ASOF join would pick either, run to run)
    select patient_id, measured_at, weight_kg from {{ ref('int_body_weights_measured') }}
    where {{ not_quarantined('Observation', 'observation_id') }}
    qualify row_number() over (partition by patient_id, measured_at order by load_seq desc, observation_id desc) = 1
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
