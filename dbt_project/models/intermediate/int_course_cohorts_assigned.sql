-- The cohorts a course belongs to, for the pages' filters and the analysts' slices: every course, the
-- calendar quarter of its first infusion (clinic time), each diagnosis group of its patient, and -- in a
-- network of several sites -- its patient's site.
with courses as (
    select course_id, patient_id, first_infusion_date from {{ ref('int_courses_built') }}
),

patient_sites as (
    select patient_id, site_id from {{ ref('stg_fhir__patients') }}
),

network as (
    select count(distinct site_id) > 1 as has_sites from patient_sites
),

conditions as (
    select * from {{ ref('int_patient_conditions_grouped') }}
)

select course_id, 'all' as cohort_dimension, 'all' as cohort, 'All courses' as cohort_label
from courses

union all

select
    course_id,
    'start_quarter',
    year(first_infusion_date) || '-Q' || quarter(first_infusion_date),
    'Started ' || year(first_infusion_date) || ' Q' || quarter(first_infusion_date)
from courses

union all

select courses.course_id, 'diagnosis', conditions.condition_group, conditions.group_label
from courses
inner join conditions on courses.patient_id = conditions.patient_id

union all

select courses.course_id, 'site', patient_sites.site_id, 'Site ' || patient_sites.site_id
from courses
inner join patient_sites on courses.patient_id = patient_sites.patient_id
where (select has_sites from network)
