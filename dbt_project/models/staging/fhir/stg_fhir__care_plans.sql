select
    resource_id as care_plan_id,
    site_id,
    status as care_plan_status,
    json_extract_string(resource, '$.intent') as intent,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    json_extract_string(resource, '$.instantiatesCanonical[0]') as instantiates_canonical,
    json_extract_string(resource, '$.title') as title,
    {{ fhir_datetime("json_extract_string(resource, '$.period.start')") }} as period_start_at,
    -- a date-only end covers that whole day
    case when length(json_extract_string(resource, '$.period.end')) = 10
         then {{ fhir_datetime("json_extract_string(resource, '$.period.end')") }} + interval 1 day
         else {{ fhir_datetime("json_extract_string(resource, '$.period.end')") }} end as period_end_at,
    last_updated_at
from {{ source('fhir', 'care_plan_current') }}
