-- Patients by random surrogate key: no names, identifiers, contacts or dates finer than a year.
-- HIPAA Safe Harbor: ages over 89 become 90 (meaning 90+), and their birth year is withheld.
with patients as (
    select * from {{ ref('stg_fhir__patients') }}
    where {{ not_quarantined('Patient', 'patient_id') }}
),

keys as (
    select * from {{ ref('int_patients_keyed') }}
),

first_course as (
    select patient_id, min(first_infusion_date) as first_course_date
    from {{ ref('int_courses_built') }} group by patient_id
),

conditions as (
    select * from {{ ref('int_patient_conditions_grouped') }}
),

condition_flags as (
    select
        patient_id,
        bool_or(condition_group = 'depression') as has_depression,
        bool_or(condition_group = 'ptsd') as has_ptsd,
        bool_or(condition_group = 'anxiety') as has_anxiety,
        bool_or(condition_group = 'substance_use') as has_substance_use
    from conditions group by patient_id
),

aged as (
    select
        keys.patient_key,
        patients.birth_date,
        patients.gender,
        {{ whole_units_between('year', 'patients.birth_date', 'first_course.first_course_date') }} as age_at_first_course,
        condition_flags.*
    from keys
    inner join patients on keys.patient_id = patients.patient_id
    left join first_course on keys.patient_id = first_course.patient_id
    left join condition_flags on keys.patient_id = condition_flags.patient_id
)

select
    patient_key,
    case when age_at_first_course is null or age_at_first_course <= 89 then cast(year(birth_date) as bigint) end as birth_year,
    case when age_at_first_course > 90 then 90 else age_at_first_course end as age_at_first_course,
    coalesce(gender, 'unknown') as sex,
    coalesce(has_depression, false) as has_depression,
    coalesce(has_ptsd, false) as has_ptsd,
    coalesce(has_anxiety, false) as has_anxiety,
    coalesce(has_substance_use, false) as has_substance_use
from aged
