select
    resource_id as observation_id,
    site_id,
    version_id,
    status as observation_status,
    is_final,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    {{ fhir_codings('resource', '$.code.coding') }} as codings,
    {{ json_text('resource', '$.category[0].coding[0].code') }} as category_code,
    {{ json_text('resource', '$.effectiveDateTime') }} as effective_raw,
    {{ fhir_precision(json_text('resource', '$.effectiveDateTime')) }} as effective_precision,
    {{ fhir_datetime(json_text('resource', '$.effectiveDateTime')) }} as effective_at,
    case
        when {{ regex_matches(json_text('resource', '$.performer[0].reference'), '^(.*/)?Patient/') }} then 'patient'
        when {{ json_text('resource', '$.performer[0].reference') }} is not null then 'practitioner'
    end as performer_type,
    value_score,
    value_source,
    {{ json_text('resource', '$.dataAbsentReason.coding[0].code') }} as data_absent_reason,
    {{ json_text('resource', '$.valueQuantity.unit') }} as value_unit,
    last_updated,
    last_updated_at,
    load_seq
from {{ source('fhir', 'observation_current') }}
