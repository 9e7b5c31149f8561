-- One row per treatment course, with the window its assessments and sessions are assigned to: from
-- baseline_window_days before the first infusion up to the next course's window.
with infusions as (
    select * from {{ ref('int_infusions_sequenced') }}
),

courses as (
    select
        course_id,
        patient_id,
        patient_key,
        course_number,
        min(started_at) as first_infusion_at,
        min(infusion_date) as first_infusion_date,
        max(started_at) filter (where is_induction) as last_induction_infusion_at,
        max(infusion_date) filter (where is_induction) as last_induction_date,
        count(*) filter (where is_induction) as induction_infusions,
        count(*) filter (where is_booster) as booster_infusions,
        max(infusion_date) filter (where is_induction and infusion_number = {{ var('induction_infusions') }})
            as final_induction_date,
        max(started_at) as last_infusion_at
    from infusions
    group by all
)

select
    *,
    first_infusion_at - interval {{ var('baseline_window_days') }} day as window_start_at,
    lead(first_infusion_at - interval {{ var('baseline_window_days') }} day)
        over (partition by patient_id order by course_number) as window_end_at,
    last_induction_infusion_at + interval {{ var('endpoint_window_days') }} day as endpoint_window_end_at
from courses
