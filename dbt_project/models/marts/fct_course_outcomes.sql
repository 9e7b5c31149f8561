-- One row per treatment course x outcome instrument the course was assessed on.
-- Definitions: ../shared/clinical-reference.md §3 (v1), thresholds from seeds/instrument_catalogue.csv,
-- windows from dbt_project.yml vars. Non-evaluable outcomes are NULL, never false.
with courses as (
    select * from {{ ref('int_courses_classified') }}
),

catalogue as (
    select * from {{ ref('instrument_catalogue') }} where is_outcome
),

assessments as (
    select assessments.*
    from {{ ref('int_assessments_assigned') }} as assessments
    where assessments.course_id is not null and assessments.is_in_range
),

course_instruments as (
    select distinct assessments.course_id, assessments.instrument
    from assessments
    inner join catalogue on assessments.instrument = catalogue.instrument
),

baseline as (
    -- the last assessment at or before the first infusion's start, no earlier than the baseline window
    select assessments.course_id, assessments.instrument, assessments.score, assessments.assessed_at
    from assessments
    inner join courses on assessments.course_id = courses.course_id
    where assessments.assessed_at <= courses.first_infusion_at
        and assessments.assessed_at >= courses.first_infusion_at - to_days({{ var('baseline_window_days') }})
    qualify row_number() over (partition by assessments.course_id, assessments.instrument
                               order by assessments.assessed_at desc, assessments.assessment_id desc) = 1
),

endpoint as (
    -- the last assessment from the last induction infusion's start to endpoint_window_days after it
    select assessments.course_id, assessments.instrument, assessments.score, assessments.assessed_at
    from assessments
    inner join courses on assessments.course_id = courses.course_id
    where assessments.assessed_at >= courses.last_induction_infusion_at
        and assessments.assessed_at <= courses.endpoint_window_end_at
    qualify row_number() over (partition by assessments.course_id, assessments.instrument
                               order by assessments.assessed_at desc, assessments.assessment_id desc) = 1
),

scored as (
    select
        course_instruments.course_id,
        course_instruments.instrument,
        catalogue.rater,
        catalogue.response_rule,
        catalogue.response_threshold,
        catalogue.remission_max,
        catalogue.remission_requires_response,
        catalogue.single_visit_relapse_min,
        baseline.score as baseline_score,
        baseline.assessed_at as baseline_at,
        endpoint.score as endpoint_score,
        endpoint.assessed_at as endpoint_at,
        baseline.score is not null and endpoint.score is not null and baseline.score > 0
            and catalogue.response_rule in ('pct_drop', 'points_drop') as is_evaluable
    from course_instruments
    inner join catalogue on course_instruments.instrument = catalogue.instrument
    left join baseline
        on course_instruments.course_id = baseline.course_id and course_instruments.instrument = baseline.instrument
    left join endpoint
        on course_instruments.course_id = endpoint.course_id and course_instruments.instrument = endpoint.instrument
),

outcomes as (
    select
        *,
        case when is_evaluable
             then {{ meets_response('baseline_score', 'endpoint_score', 'response_rule', 'response_threshold') }}
        end as is_responder
    from scored
),

follow_up as (
    -- assessments after the endpoint, for responders: relapse rules (a) and (b)
    select
        assessments.course_id,
        assessments.instrument,
        assessments.assessed_at,
        assessments.assessment_id,
        outcomes.single_visit_relapse_min is not null
            and assessments.score >= outcomes.single_visit_relapse_min as at_relapse_threshold,
        not {{ meets_response('outcomes.baseline_score', 'assessments.score', 'outcomes.response_rule',
                              'outcomes.response_threshold') }} as lost_response
    from assessments
    inner join outcomes
        on assessments.course_id = outcomes.course_id and assessments.instrument = outcomes.instrument
    where outcomes.is_responder and assessments.assessed_at > outcomes.endpoint_at
),

follow_up_sequenced as (
    select
        *,
        lead(lost_response) over (partition by course_id, instrument
                                  order by assessed_at, assessment_id) as next_lost_response
    from follow_up
),

threshold_events as (
    select course_id, instrument, min(assessed_at) as event_at
    from follow_up_sequenced where at_relapse_threshold group by all
),

consecutive_events as (
    -- two consecutive assessments that both fail the response criterion, dated at the first
    select course_id, instrument, min(assessed_at) as event_at
    from follow_up_sequenced where lost_response and next_lost_response group by all
),

booster_events as (
    select course_id, min(started_at) as event_at
    from {{ ref('int_infusions_sequenced') }}
    where is_booster and {{ 'true' if var('relapse_on_booster') else 'false' }}
    group by course_id
),

last_assessment as (
    select course_id, instrument, max(assessed_at) as last_assessed_at
    from assessments group by all
),

events as (
    select
        outcomes.*,
        threshold_events.event_at as threshold_event_at,
        consecutive_events.event_at as consecutive_event_at,
        case when booster_events.event_at > courses.last_induction_infusion_at then booster_events.event_at end
            as booster_event_at,
        greatest(last_assessment.last_assessed_at, outcomes.endpoint_at) as censor_at,
        courses.last_induction_date
    from outcomes
    inner join courses on outcomes.course_id = courses.course_id
    left join threshold_events
        on outcomes.course_id = threshold_events.course_id and outcomes.instrument = threshold_events.instrument
    left join consecutive_events
        on outcomes.course_id = consecutive_events.course_id and outcomes.instrument = consecutive_events.instrument
    left join booster_events on outcomes.course_id = booster_events.course_id
    left join last_assessment
        on outcomes.course_id = last_assessment.course_id and outcomes.instrument = last_assessment.instrument
),

resolved as (
    select
        *,
        least(threshold_event_at, consecutive_event_at, booster_event_at) as relapse_at
    from events
)

select
    resolved.course_id,
    courses.patient_key,
    courses.protocol,
    resolved.instrument,
    resolved.rater,
    resolved.baseline_score,
    resolved.endpoint_score,
    resolved.baseline_at,
    resolved.endpoint_at,
    resolved.is_evaluable,
    case when resolved.is_evaluable
         then round(100.0 * (resolved.endpoint_score - resolved.baseline_score) / resolved.baseline_score, 2)
    end as pct_change,
    resolved.is_responder,
    case when resolved.is_evaluable
         then {{ meets_remission('resolved.endpoint_score', 'resolved.remission_max',
                                 'resolved.remission_requires_response', 'resolved.is_responder') }}
    end as is_remitter,
    case when resolved.is_responder then resolved.relapse_at is not null end as relapsed,
    case when resolved.is_responder
         then date_diff('day', resolved.last_induction_date,
                        {{ local_date('coalesce(resolved.relapse_at, resolved.censor_at)') }})
    end as days_to_relapse_or_censor,
    case when resolved.is_responder and resolved.relapse_at is not null then
        case resolved.relapse_at
            when resolved.threshold_event_at then 'single_visit_threshold'
            when resolved.consecutive_event_at then 'consecutive_loss_of_response'
            else 'booster'
        end
    end as relapse_reason
from resolved
inner join courses on resolved.course_id = courses.course_id
