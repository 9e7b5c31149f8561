select
    resource_id as care_plan_id,
    site_id,
    status as care_plan_status,
    {{ json_text('resource', '$.intent') }} as intent,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    {{ json_text('resource', '$.instantiatesCanonical[0]') }} as instantiates_canonical,
    {{ json_text('resource', '$.title') }} as title,
    {{ fhir_datetime(json_text('resource', '$.period.start')) }} as period_start_at,
    -- a date-only end covers that whole day
    case when length({{ json_text('resource', '$.period.end') }}) = 10
         then {{ fhir_datetime(json_text('resource', '$.period.end')) }} + interval 1 day
         else {{ fhir_datetime(json_text('resource', '$.period.end')) }} end as period_end_at,
    last_updated_at
from {{ source('fhir', 'care_plan_current') }}
