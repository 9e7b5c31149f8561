-- Infusions: the ketamine administrations not in quarantine, with the weight for mg/kg doses. Rebuilt whole
-- each night (no JSON is read here): a newly recorded weight can change an old infusion's dose per kg.
with ketamine as (
    select {{ star_except(['load_seq']) }} from {{ ref('int_ketamine_administrations_identified') }}
    where {{ not_quarantined('MedicationAdministration', 'medication_administration_id') }}
        and {{ patient_not_quarantined('patient_id') }}
),

weights as (
    -- two weights at the same instant: the one recorded last (an ASOF join would pick either, run to run)
    select patient_id, measured_at, weight_kg from {{ ref('int_body_weights_measured') }}
    where {{ not_quarantined('Observation', 'observation_id') }}
    qualify row_number() over (partition by patient_id, measured_at order by load_seq desc, observation_id desc) = 1
),

weights_around as (
    -- the weight at or before the infusion (the newest), else the first one recorded after it
    select
        ketamine.medication_administration_id,
        max_by(weights.weight_kg, weights.measured_at) filter (where weights.measured_at <= ketamine.started_at)
            as prior_weight_kg,
        min_by(weights.weight_kg, weights.measured_at) filter (where weights.measured_at > ketamine.started_at)
            as later_weight_kg
    from ketamine
    inner join weights on ketamine.patient_id = weights.patient_id
    group by ketamine.medication_administration_id
),

with_weight as (
    select ketamine.*, weights_around.prior_weight_kg, weights_around.later_weight_kg
    from ketamine
    left join weights_around using (medication_administration_id)
)

select
    medication_administration_id as infusion_id,
    patient_id,
    started_at,
    ended_at,
    {{ local_date('started_at') }} as infusion_date,
    {{ units_between('minute', 'started_at', 'ended_at') }} as duration_minutes,
    route_code,
    coalesce(prior_weight_kg, later_weight_kg) as weight_kg,
    case when dose_unit = 'mg' then dose_value
         when dose_unit = 'mg/kg' then dose_value * coalesce(prior_weight_kg, later_weight_kg) end as dose_mg,
    case when dose_unit = 'mg/kg' then dose_value
         when dose_unit = 'mg' then round(dose_value / coalesce(prior_weight_kg, later_weight_kg), 3) end as dose_mg_per_kg
from with_weight
