select
    resource_id as procedure_id,
    site_id,
    version_id,
    status as procedure_status,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    {{ fhir_codings('resource', '$.code.coding') }} as codings,
    -- R4 has one category; R5-style exports send a list: read both
    coalesce({{ fhir_codings('resource', '$.category.coding') }},
             {{ fhir_codings('resource', '$.category[0].coding') }}) as category_codings,
    coalesce({{ json_text('resource', '$.performedPeriod.start') }},
             {{ json_text('resource', '$.performedDateTime') }}) as performed_raw,
    {{ fhir_datetime('coalesce(' ~ json_text('resource', '$.performedPeriod.start') ~ ', ' ~ json_text('resource', '$.performedDateTime') ~ ')') }} as performed_at,
    {{ fhir_datetime(json_text('resource', '$.performedPeriod.end')) }} as performed_end_at,
    last_updated_at,
    load_seq
from {{ source('fhir', 'procedure_current') }}
