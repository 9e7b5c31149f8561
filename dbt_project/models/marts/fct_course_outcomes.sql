-- One row per treatment course x outcome instrument the course was assessed on, every one of them with its
-- evaluability and relapse status (never a NULL that means two things).
-- Definitions v2: ../shared/clinical-reference.md §3; thresholds from seeds/instrument_catalogue.csv, windows
-- and switches from dbt_project.yml vars. Scores are severities: for days abstinent, days of use (30 - days
-- abstinent), so the same rules judge substance use.
with courses as (
    select
        *,
        lead(first_infusion_at) over (partition by patient_id order by course_number) as next_course_at
    from {{ ref('int_courses_classified') }}
),

cutoff as (
    select cutoff_at from {{ ref('int_data_cutoff_determined') }}
),

course_status as (
    -- where each course stands at the data cut-off; the first two are provisional
    select
        courses.*,
        case
            when courses.next_course_at is not null then 'closed'
            when courses.induction_infusions < {{ var('induction_infusions') }}
                and cutoff.cutoff_at - courses.last_induction_infusion_at
                    <= interval {{ var('induction_max_gap_days') }} day then 'in_induction'
            when courses.endpoint_window_end_at > cutoff.cutoff_at then 'awaiting_endpoint'
            else 'in_follow_up'
        end as course_status
    from courses
    cross join cutoff
),

catalogue as (
    select * from {{ ref('instrument_catalogue') }} where is_outcome
),

assessments as (
    select assessments.*
    from {{ ref('int_assessments_assigned') }} as assessments
    where assessments.is_in_range
),

course_instruments as (
    -- the instruments each course was assessed on (the assessments assigned to it)
    select distinct assessments.course_id, assessments.instrument
    from assessments
    inner join catalogue on assessments.instrument = catalogue.instrument
    where assessments.course_id is not null
),

windowed as (
    -- a course's assessments by patient and time, from its baseline window to the day before the next
    -- course's first infusion: the next course's baseline can be this course's relapse
    select course_status.course_id, assessments.instrument, assessments.assessment_id,
           {{ severity('assessments.score', 'catalogue') }} as score, assessments.assessed_at
    from assessments
    inner join catalogue on assessments.instrument = catalogue.instrument
    inner join course_status
        on assessments.patient_id = course_status.patient_id
        and assessments.assessed_at >= course_status.first_infusion_at - interval {{ var('baseline_window_days') }} day
        and (course_status.next_course_at is null
             or {{ local_date('assessments.assessed_at') }} < {{ local_date('course_status.next_course_at') }})
),

baseline as (
    -- the last assessment at or before the first infusion's start, no earlier than the baseline window
    select windowed.course_id, windowed.instrument, windowed.score, windowed.assessed_at
    from windowed
    inner join course_status on windowed.course_id = course_status.course_id
    where windowed.assessed_at <= course_status.first_infusion_at
    qualify row_number() over (partition by windowed.course_id, windowed.instrument
                               order by windowed.assessed_at desc, windowed.assessment_id desc) = 1
),

endpoint as (
    -- the last assessment from the last induction infusion's start to endpoint_window_days after it
    select windowed.course_id, windowed.instrument, windowed.score, windowed.assessed_at
    from windowed
    inner join course_status on windowed.course_id = course_status.course_id
    where windowed.assessed_at >= course_status.last_induction_infusion_at
        and windowed.assessed_at <= course_status.endpoint_window_end_at
    qualify row_number() over (partition by windowed.course_id, windowed.instrument
                               order by windowed.assessed_at desc, windowed.assessment_id desc) = 1
),

scored as (
    select
        course_instruments.course_id,
        course_instruments.instrument,
        course_status.course_status,
        catalogue.rater,
        catalogue.response_rule,
        catalogue.response_threshold,
        catalogue.remission_max,
        catalogue.remission_requires_response,
        catalogue.single_visit_relapse_min,
        catalogue.relapse_at_baseline_severity,
        baseline.score as baseline_score,
        baseline.assessed_at as baseline_at,
        endpoint.score as endpoint_score,
        endpoint.assessed_at as endpoint_at,
        -- the scores allow a judgement (final, or provisional while the course is open)
        baseline.score > 0 and endpoint.score is not null as is_judged,
        case
            when course_status.course_status in ('in_induction', 'awaiting_endpoint') then 'provisional'
            when baseline.score is null then 'no_baseline'
            when baseline.score = 0 then 'baseline_zero'
            when endpoint.score is null then 'no_endpoint'
            else 'evaluable'
        end as evaluability
    from course_instruments
    inner join catalogue on course_instruments.instrument = catalogue.instrument
    inner join course_status on course_instruments.course_id = course_status.course_id
    left join baseline
        on course_instruments.course_id = baseline.course_id and course_instruments.instrument = baseline.instrument
    left join endpoint
        on course_instruments.course_id = endpoint.course_id and course_instruments.instrument = endpoint.instrument
),

outcomes as (
    select
        *,
        case when is_judged
             then {{ meets_response('baseline_score', 'endpoint_score', 'response_rule', 'response_threshold') }}
        end as is_responder
    from scored
),

follow_up as (
    -- responders' assessments after the endpoint, up to the day before the next course: rules (a) and (b)
    select
        windowed.course_id,
        windowed.instrument,
        windowed.assessed_at,
        windowed.assessment_id,
        (outcomes.single_visit_relapse_min is not null and windowed.score >= outcomes.single_visit_relapse_min)
            or (coalesce(outcomes.relapse_at_baseline_severity, false) and windowed.score >= outcomes.baseline_score)
            as at_relapse_threshold,
        not {{ meets_response('outcomes.baseline_score', 'windowed.score', 'outcomes.response_rule',
                              'outcomes.response_threshold') }} as lost_response
    from windowed
    inner join outcomes
        on windowed.course_id = outcomes.course_id and windowed.instrument = outcomes.instrument
    where outcomes.is_responder and windowed.assessed_at > outcomes.endpoint_at
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
    -- a booster after the endpoint assessment (one before it is part of the induction)
    select outcomes.course_id, outcomes.instrument, min(boosters.started_at) as event_at
    from outcomes
    inner join {{ ref('int_infusions_sequenced') }} as boosters
        on outcomes.course_id = boosters.course_id
        and boosters.is_booster
        and boosters.started_at > outcomes.endpoint_at
    where {{ 'true' if var('relapse_on_booster') else 'false' }}
    group by all
),

last_follow_up as (
    select course_id, instrument, max(assessed_at) as last_assessed_at
    from follow_up group by all
),

events as (
    select
        outcomes.*,
        threshold_events.event_at as threshold_event_at,
        consecutive_events.event_at as consecutive_event_at,
        booster_events.event_at as booster_event_at,
        -- coming back for a new induction is itself loss of benefit (censoring it would be informative)
        case when {{ 'true' if var('relapse_on_retreatment') else 'false' }} then courses.next_course_at end
            as retreatment_event_at,
        greatest(last_follow_up.last_assessed_at, outcomes.endpoint_at) as censor_at,
        courses.last_induction_date
    from outcomes
    inner join courses on outcomes.course_id = courses.course_id
    left join threshold_events
        on outcomes.course_id = threshold_events.course_id and outcomes.instrument = threshold_events.instrument
    left join consecutive_events
        on outcomes.course_id = consecutive_events.course_id and outcomes.instrument = consecutive_events.instrument
    left join booster_events
        on outcomes.course_id = booster_events.course_id and outcomes.instrument = booster_events.instrument
    left join last_follow_up
        on outcomes.course_id = last_follow_up.course_id and outcomes.instrument = last_follow_up.instrument
),

resolved as (
    select
        *,
        least(threshold_event_at, consecutive_event_at, booster_event_at, retreatment_event_at) as relapse_at
    from events
)

select
    resolved.course_id,
    courses.patient_key,
    courses.protocol,
    resolved.instrument,
    resolved.rater,
    resolved.course_status,
    resolved.evaluability,
    resolved.evaluability = 'evaluable' as is_evaluable,
    resolved.baseline_score,
    resolved.endpoint_score,
    resolved.baseline_at,
    resolved.endpoint_at,
    case when resolved.is_judged
         then round(100.0 * (resolved.endpoint_score - resolved.baseline_score) / resolved.baseline_score, 2)
    end as pct_change,
    resolved.is_responder,
    case when resolved.is_judged
         then {{ meets_remission('resolved.endpoint_score', 'resolved.remission_max',
                                 'resolved.remission_requires_response', 'resolved.is_responder') }}
    end as is_remitter,
    case when resolved.is_judged then resolved.endpoint_score > resolved.baseline_score end as is_worse,
    case when resolved.is_responder then resolved.relapse_at is not null end as relapsed,
    case
        when not coalesce(resolved.is_judged, false) then 'not_evaluable'
        when not resolved.is_responder then 'not_responder'
        when resolved.relapse_at is not null then 'relapsed'
        else 'censored'
    end as relapse_status,
    case when resolved.is_responder
         then ({{ units_between('day', 'resolved.last_induction_date',
                                local_date('coalesce(resolved.relapse_at, resolved.censor_at)')) }})::integer
    end as days_to_relapse_or_censor,
    case when resolved.is_responder and resolved.relapse_at is not null then
        case resolved.relapse_at
            when resolved.threshold_event_at then 'single_visit_threshold'
            when resolved.consecutive_event_at then 'consecutive_loss_of_response'
            when resolved.booster_event_at then 'booster'
            else 'retreatment'
        end
    end as relapse_reason
from resolved
inner join courses on resolved.course_id = courses.course_id
