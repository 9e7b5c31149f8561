-- Courses from infusions (clinical-reference §3): a course starts at an infusion with none in the previous
-- course_gap_days; its induction takes the following infusions while each gap is <= induction_max_gap_days,
-- up to induction_infusions; later infusions of the course are boosters.
with infusions as (
    select * from {{ ref('int_infusions_identified') }}
),

gaps as (
    select
        *,
        {{ units_between('day', 'lag(infusion_date) over by_patient', 'infusion_date') }} as gap_days
    from infusions
    window by_patient as (partition by patient_id order by started_at, infusion_id)
),

starts as (
    select *, gap_days is null or gap_days > {{ var('course_gap_days') }} as starts_course from gaps
),

courses as (
    select
        *,
        (sum(starts_course::int)
            over (partition by patient_id order by started_at, infusion_id
                  rows between unbounded preceding and current row))::integer
            as course_number
    from starts
),

numbered as (
    select
        *,
        (row_number() over by_course)::integer as infusion_number,
        sum(case when not starts_course and gap_days > {{ var('induction_max_gap_days') }} then 1 else 0 end)
            over (partition by patient_id, course_number order by started_at, infusion_id
                  rows between unbounded preceding and current row) as long_gaps_so_far
    from courses
    window by_course as (partition by patient_id, course_number order by started_at, infusion_id)
)

select
    numbered.infusion_id,
    numbered.patient_id,
    keys.patient_key,
    keys.patient_key || '-c' || numbered.course_number as course_id,
    numbered.course_number,
    numbered.infusion_number,
    numbered.infusion_number <= {{ var('induction_infusions') }} and numbered.long_gaps_so_far = 0 as is_induction,
    not (numbered.infusion_number <= {{ var('induction_infusions') }} and numbered.long_gaps_so_far = 0) as is_booster,
    numbered.gap_days,
    numbered.started_at,
    numbered.ended_at,
    numbered.infusion_date,
    numbered.duration_minutes,
    numbered.weight_kg,
    numbered.dose_mg,
    numbered.dose_mg_per_kg
from numbered
inner join {{ ref('int_patients_keyed') }} as keys on numbered.patient_id = keys.patient_id
