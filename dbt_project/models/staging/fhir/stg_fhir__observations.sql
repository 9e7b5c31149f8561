select
    resource_id as observation_id,
    site_id,
    version_id,
    status as observation_status,
    is_final,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    {{ fhir_codings('resource', '$.code.coding') }} as codings,
    json_extract_string(resource, '$.category[0].coding[0].code') as category_code,
    json_extract_string(resource, '$.effectiveDateTime') as effective_raw,
    {{ fhir_precision("json_extract_string(resource, '$.effectiveDateTime')") }} as effective_precision,
    {{ fhir_datetime("json_extract_string(resource, '$.effectiveDateTime')") }} as effective_at,
    case
        when json_extract_string(resource, '$.performer[0].reference') similar to '(.*/)?Patient/.*' then 'patient'
        when json_extract_string(resource, '$.performer[0].reference') is not null then 'practitioner'
    end as performer_type,
    value_score,
    value_source,
    json_extract_string(resource, '$.dataAbsentReason.coding[0].code') as data_absent_reason,
    json_extract_string(resource, '$.valueQuantity.unit') as value_unit,
    last_updated,
    last_updated_at,
    load_seq
from {{ source('fhir', 'observation_current') }}
