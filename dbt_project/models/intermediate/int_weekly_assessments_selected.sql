-- Each course's last in-range assessment per instrument and week since its first infusion (weeks 0 to
-- follow_up_weeks): the one weekly reading the weekly report marts count, so each course weighs the same.
select
    course_id,
    instrument,
    floor(days_from_first_infusion / 7)::integer as week,
    score,
    assessed_at
from {{ ref('int_assessments_assigned') }}
where course_id is not null and is_in_range
    and days_from_first_infusion between 0 and 7 * {{ var('follow_up_weeks') }} + 6
qualify row_number() over (partition by course_id, instrument, week
                           order by assessed_at desc, assessment_id desc) = 1
