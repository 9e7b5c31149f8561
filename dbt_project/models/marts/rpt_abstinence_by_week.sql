-- Substance use: the share of days abstinent by week since the first infusion, per protocol (Dakwar 2019,
-- KARE 2022 report it so). Each course's last days-abstinent report of the week counts once.
with catalogue as (
    select * from {{ ref('instrument_catalogue') }} where coalesce(severity_reversed, false)
),

weekly as (
    select weekly.course_id, weekly.instrument, weekly.week, weekly.score as days_abstinent, catalogue.max_score
    from {{ ref('int_weekly_assessments_selected') }} as weekly
    inner join catalogue on weekly.instrument = catalogue.instrument
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
