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
    select assessments.course_id, assessments.instrument, {{ severity('assessments.score', 'catalogue') }} as score,
           floor(assessments.days_from_first_infusion / 7)::integer as week
    from {{ ref('int_assessments_assigned') }} as assessments
    inner join catalogue on assessments.instrument = catalogue.instrument
    where assessments.course_id is not null and assessments.is_in_range
        and assessments.days_from_first_infusion between 0 and 7 * {{ var('follow_up_weeks') }} + 6
    qualify row_number() over (partition by assessments.course_id, assessments.instrument, week
                               order by assessments.assessed_at desc, assessments.assessment_id desc) = 1
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
