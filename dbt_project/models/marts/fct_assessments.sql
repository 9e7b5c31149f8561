-- Scored assessments in range (out-of-range scores go to quarantine via the quality gate).
select
    assessment_id,
    patient_key,
    course_id,
    instrument,
    rater,
    score,
    assessed_at,
    is_date_only,
    value_source,
    days_from_first_infusion,
    phase
from {{ ref('int_assessments_assigned') }}
where is_in_range and patient_key is not null
union all
select
    assessments.assessment_id,
    keys.patient_key,
    null,
    assessments.instrument,
    assessments.rater,
    assessments.score,
    assessments.assessed_at,
    assessments.is_date_only,
    assessments.value_source,
    null,
    'pre_course'
from {{ ref('int_assessments_assigned') }} as assessments
inner join {{ ref('int_patients_keyed') }} as keys on assessments.patient_id = keys.patient_id
where assessments.is_in_range and assessments.patient_key is null
