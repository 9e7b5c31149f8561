-- Courses, patients and adherence per protocol.
select
    protocol,
    count(*) as n_courses,
    count(distinct patient_key) as n_patients,
    avg(induction_infusions) as mean_induction_infusions,
    count(*) filter (where completed_induction) as n_completed_induction,
    count(*) filter (where adherent) as n_adherent,
    avg(psychotherapy_sessions) as mean_psychotherapy_sessions,
    count(*) filter (where sessions_on_infusion_days > 0) as n_with_session_on_infusion_day,
    count(*) filter (where booster_infusions > 0) as n_with_boosters,
    min(first_infusion_at) as first_course_started_at,
    max(first_infusion_at) as last_course_started_at
from {{ ref('fct_treatment_courses') }}
group by protocol
order by protocol
