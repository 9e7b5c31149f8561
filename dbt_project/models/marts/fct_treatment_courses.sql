select
    course_id,
    patient_key,
    course_number,
    protocol,
    protocol_source,
    first_infusion_at,
    last_induction_infusion_at,
    induction_infusions,
    booster_infusions,
    psychotherapy_sessions,
    sessions_on_infusion_days,
    completed_induction,
    adherent
from {{ ref('int_courses_classified') }}
