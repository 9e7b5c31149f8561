-- Response and remission rates by week since the first infusion: each course's last assessment of the
-- week, judged against its baseline.
with outcomes as (
    select course_id, protocol, instrument, baseline_score
    from {{ ref('fct_course_outcomes') }}
    where baseline_score > 0
        and (evaluability <> 'provisional' or {{ 'true' if var('include_provisional_outcomes') else 'false' }})
),

catalogue as (
    select * from {{ ref('instrument_catalogue') }} where is_outcome and response_rule <> 'none'
),

weekly as (
    -- severities, as fct_course_outcomes judges them (days of use for days abstinent)
    select weekly.course_id, weekly.instrument, weekly.week, {{ severity('weekly.score', 'catalogue') }} as score
    from {{ ref('int_weekly_assessments_selected') }} as weekly
    inner join catalogue on weekly.instrument = catalogue.instrument
),

judged as (
    select
        outcomes.protocol,
        weekly.instrument,
        weekly.week,
        {{ meets_response('outcomes.baseline_score', 'weekly.score', 'catalogue.response_rule',
                          'catalogue.response_threshold') }} as responds,
        {{ meets_remission('weekly.score', 'catalogue.remission_max', 'catalogue.remission_requires_response',
                           meets_response('outcomes.baseline_score', 'weekly.score', 'catalogue.response_rule',
                                          'catalogue.response_threshold')) }} as remits
    from weekly
    inner join outcomes on weekly.course_id = outcomes.course_id and weekly.instrument = outcomes.instrument
    inner join catalogue on weekly.instrument = catalogue.instrument
)

select
    protocol,
    instrument,
    week,
    count(*) as n_assessed,
    count(*) filter (where responds) as n_responders,
    count(*) filter (where remits) as n_remitters,
    count(*) filter (where responds) / count(*) as response_rate,
    case when bool_or(remits is not null) then count(*) filter (where remits) / count(*) end as remission_rate
from judged
group by all
order by protocol, instrument, week
