-- Mean score per protocol x instrument x week since the first infusion, with a 95% interval; one
-- assessment per course and week (the last), so each course weighs the same.
with weekly as (
    select fct_assessments.course_id, fct_assessments.instrument,
           floor(fct_assessments.days_from_first_infusion / 7)::integer as week, fct_assessments.score
    from {{ ref('fct_assessments') }} as fct_assessments
    where fct_assessments.course_id is not null
        and fct_assessments.days_from_first_infusion between -14 and 7 * {{ var('follow_up_weeks') }} + 6
    qualify row_number() over (partition by fct_assessments.course_id, fct_assessments.instrument, week
                               order by fct_assessments.assessed_at desc, fct_assessments.assessment_id desc) = 1
)

select
    courses.protocol,
    weekly.instrument,
    weekly.week,
    count(*) as n_courses,
    avg(weekly.score) as mean_score,
    stddev_samp(weekly.score) as sd_score,
    avg(weekly.score) - 1.96 * stddev_samp(weekly.score) / sqrt(count(*)) as ci_lower,
    avg(weekly.score) + 1.96 * stddev_samp(weekly.score) / sqrt(count(*)) as ci_upper
from weekly
inner join {{ ref('fct_treatment_courses') }} as courses on weekly.course_id = courses.course_id
group by all
order by 1, 2, 3
