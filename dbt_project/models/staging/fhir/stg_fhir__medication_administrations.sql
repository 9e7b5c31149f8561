select
    resource_id as medication_administration_id,
    site_id,
    version_id,
    status as administration_status,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    {{ fhir_codings('resource', '$.medicationCodeableConcept.coding') }} as medication_codings,
    json_extract_string(resource, '$.medicationCodeableConcept.text') as medication_text,
    coalesce(json_extract_string(resource, '$.effectivePeriod.start'),
             json_extract_string(resource, '$.effectiveDateTime')) as started_raw,
    {{ fhir_datetime("coalesce(json_extract_string(resource, '$.effectivePeriod.start'), json_extract_string(resource, '$.effectiveDateTime'))") }} as started_at,
    {{ fhir_datetime("json_extract_string(resource, '$.effectivePeriod.end')") }} as ended_at,
    try_cast(json_extract_string(resource, '$.dosage.dose.value') as double) as dose_value,
    coalesce(json_extract_string(resource, '$.dosage.dose.code'),
             json_extract_string(resource, '$.dosage.dose.unit')) as dose_unit,
    json_extract_string(resource, '$.dosage.route.coding[0].code') as route_code,
    last_updated_at,
    load_seq
from {{ source('fhir', 'medication_administration_current') }}
