select
    sessions.session_id,
    coalesce(sessions.patient_key, keys.patient_key) as patient_key,
    sessions.course_id,
    sessions.modality,
    sessions.cpt_code,
    sessions.minutes,
    sessions.session_at,
    sessions.on_infusion_day
from {{ ref('int_psychotherapy_sessions_assigned') }} as sessions
inner join {{ ref('int_patients_keyed') }} as keys on sessions.patient_id = keys.patient_id
