select
    resource_id as condition_id,
    site_id,
    {{ fhir_reference_id('resource', '$.subject.reference', 'Patient') }} as patient_id,
    {{ fhir_codings('resource', '$.code.coding') }} as codings,
    {{ json_text('resource', '$.code.text') }} as condition_text,
    {{ json_text('resource', '$.clinicalStatus.coding[0].code') }} as clinical_status,
    {{ json_text('resource', '$.verificationStatus.coding[0].code') }} as verification_status,
    {{ json_text('resource', '$.onsetDateTime') }} as onset_raw,
    last_updated_at
from {{ source('fhir', 'condition_current') }}
