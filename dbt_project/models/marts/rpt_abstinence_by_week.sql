-- Substance use: the share of days abstinent by week since the first infusion, per protocol (Dakwar 2019,
-- KARE 2022 report it so). Each course's last days-abstinent report of the week counts once.
with catalogue as (
    select * from {{ ref('instrument_catalogue') }} where coalesce(severity_reversed, false)
),

weekly as (
    select assessments.course_id, assessments.instrument, catalogue.max_score,
           assessments.score as days_abstinent,
           floor(assessments.days_from_first_infusion / 7)::integer as week
    from {{ ref('int_assessments_assigned') }} as assessments
    inner join catalogue on assessments.instrument = catalogue.instrument
    where assessments.course_id is not null and assessments.is_in_range
        and assessments.days_from_first_infusion between 0 and 7 * {{ var('follow_up_weeks') }} + 6
    qualify row_number() over (partition by assessments.course_id, assessments.instrument, week
                               order by assessments.assessed_at desc, assessments.assessment_id desc) = 1
)

select
    courses.protocol,
    weekly.instrument,
    weekly.week,
    count(*)::integer as n_courses,
    avg(weekly.days_abstinent / weekly.max_score) as share_days_abstinent,
    avg((weekly.days_abstinent = weekly.max_score)::integer) as share_fully_abstinent
from weekly
inner join {{ ref('fct_treatment_courses') }} as courses on weekly.course_id = courses.course_id
group by all
