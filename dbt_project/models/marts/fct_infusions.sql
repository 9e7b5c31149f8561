select
    infusion_id,
    patient_key,
    course_id,
    infusion_number,
    started_at as administered_at,
    duration_minutes,
    dose_mg,
    dose_mg_per_kg,
    is_booster
from {{ ref('int_infusions_sequenced') }}
