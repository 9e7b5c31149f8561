-- Protocol (CarePlan covering the first infusion, else inferred from the course's psychotherapy
-- modalities, else the protocols seed's default: ketamine alone), completion and adherence.
with courses as (
    select * from {{ ref('int_courses_built') }}
),

protocols as (
    select * from {{ ref('protocols') }}
),

care_plans as (
    select care_plans.*, protocols.protocol
    from {{ ref('stg_fhir__care_plans') }} as care_plans
    inner join protocols on care_plans.instantiates_canonical = protocols.canonical_url
    where care_plans.care_plan_status not in ('entered-in-error', 'revoked', 'draft')
),

planned as (
    select courses.course_id, care_plans.protocol
    from courses
    inner join care_plans
        on courses.patient_id = care_plans.patient_id
        and care_plans.period_start_at <= courses.first_infusion_at
        and (care_plans.period_end_at is null or care_plans.period_end_at >= courses.first_infusion_at)
    qualify row_number() over (partition by courses.course_id order by care_plans.period_start_at desc,
                                                                     care_plans.care_plan_id) = 1
),

sessions as (
    select * from {{ ref('int_psychotherapy_sessions_assigned') }} where course_id is not null
),

session_counts as (
    select
        course_id,
        count(*) as psychotherapy_sessions,
        count(*) filter (where on_infusion_day) as sessions_on_infusion_days
    from sessions
    group by course_id
),

inferred as (
    select course_id, protocol
    from (
        select sessions.course_id, protocols.protocol, protocols.inference_priority, count(*) as sessions
        from sessions
        inner join protocols on sessions.modality = protocols.inferred_from_modality
        group by sessions.course_id, protocols.protocol, protocols.inference_priority
    ) as counted
    qualify row_number() over (partition by course_id order by sessions desc, inference_priority) = 1
)

select
    courses.*,
    coalesce(planned.protocol, inferred.protocol, (select protocol from protocols where is_default)) as protocol,
    case when planned.protocol is not null then 'care_plan'
         when inferred.protocol is not null then 'inferred_from_psychotherapy'
         else 'default' end as protocol_source,
    coalesce(session_counts.psychotherapy_sessions, 0) as psychotherapy_sessions,
    coalesce(session_counts.sessions_on_infusion_days, 0) as sessions_on_infusion_days,
    courses.induction_infusions >= {{ var('induction_infusions') }} as completed_induction,
    courses.induction_infusions >= {{ var('induction_infusions') }}
        and {{ units_between('day', 'courses.first_infusion_date', 'courses.final_induction_date') }}
            <= {{ var('adherence_window_days') }}
        and coalesce(session_counts.sessions_on_infusion_days, 0) = 0 as adherent
from courses
left join planned on courses.course_id = planned.course_id
left join inferred on courses.course_id = inferred.course_id
left join session_counts on courses.course_id = session_counts.course_id
