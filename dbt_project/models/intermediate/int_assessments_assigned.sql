-- Assessments placed in their course and phase: baseline (up to the first infusion's start), induction
-- (through the endpoint window), follow-up (after it); pre_course when before any course's window.
with assessments as (
    select {{ star_except(['load_seq']) }} from {{ ref('int_assessments_scored') }}
    where {{ not_quarantined('Observation', 'assessment_id') }} and {{ patient_not_quarantined('patient_id') }}
),

courses as (
    select * from {{ ref('int_courses_built') }}
)

select
    assessments.*,
    courses.course_id,
    courses.patient_key,
    case when courses.course_id is null then 'pre_course'
         when assessments.assessed_at <= courses.first_infusion_at then 'baseline'
         when assessments.assessed_at <= courses.endpoint_window_end_at then 'induction'
         else 'follow_up' end as phase,
    {{ units_between('day', 'courses.first_infusion_date', 'assessments.assessed_date') }} as days_from_first_infusion
from assessments
left join courses
    on assessments.patient_id = courses.patient_id
    and assessments.assessed_at >= courses.window_start_at
    and (courses.window_end_at is null or assessments.assessed_at < courses.window_end_at)
