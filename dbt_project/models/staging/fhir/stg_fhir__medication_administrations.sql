select
    resource_id as medication_administration_id,
    site_id,
    version_id,
    status as administration_status,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    {{ fhir_codings('resource', '$.medicationCodeableConcept.coding') }} as medication_codings,
    {{ json_text('resource', '$.medicationCodeableConcept.text') }} as medication_text,
    coalesce({{ json_text('resource', '$.effectivePeriod.start') }},
             {{ json_text('resource', '$.effectiveDateTime') }}) as started_raw,
    {{ fhir_datetime('coalesce(' ~ json_text('resource', '$.effectivePeriod.start') ~ ', ' ~ json_text('resource', '$.effectiveDateTime') ~ ')') }} as started_at,
    {{ fhir_datetime(json_text('resource', '$.effectivePeriod.end')) }} as ended_at,
    try_cast({{ json_text('resource', '$.dosage.dose.value') }} as double) as dose_value,
    coalesce({{ json_text('resource', '$.dosage.dose.code') }},
             {{ json_text('resource', '$.dosage.dose.unit') }}) as dose_unit,
    {{ json_text('resource', '$.dosage.route.coding[0].code') }} as route_code,
    last_updated_at,
    load_seq
from {{ source('fhir', 'medication_administration_current') }}
