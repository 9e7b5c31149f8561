with sessions as (
    select {{ star_except(['load_seq']) }} from {{ ref('int_psychotherapy_sessions_identified') }}
    where {{ not_quarantined('Procedure', 'session_id') }} and {{ patient_not_quarantined('patient_id') }}
),

courses as (
    select * from {{ ref('int_courses_built') }}
),

infusion_days as (
    select distinct patient_id, infusion_date from {{ ref('int_infusions_identified') }}
)

select
    sessions.*,
    courses.course_id,
    courses.patient_key,
    infusion_days.infusion_date is not null as on_infusion_day
from sessions
left join courses
    on sessions.patient_id = courses.patient_id
    and sessions.session_at >= courses.window_start_at
    and (courses.window_end_at is null or sessions.session_at < courses.window_end_at)
left join infusion_days
    on sessions.patient_id = infusion_days.patient_id and sessions.session_date = infusion_days.infusion_date
