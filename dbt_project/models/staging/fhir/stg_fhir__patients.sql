-- Typing only. Names, MRNs, addresses and contacts are not selected: they stay in the raw layer.
select
    resource_id as patient_id,
    site_id,
    version_id,
    try_cast({{ json_text('resource', '$.birthDate') }} as date) as birth_date,
    {{ json_text('resource', '$.birthDate') }} as birth_date_raw,
    {{ json_text('resource', '$.gender') }} as gender,
    coalesce(try_cast({{ json_text('resource', '$.deceasedBoolean') }} as boolean), false)
        or {{ json_text('resource', '$.deceasedDateTime') }} is not null as is_deceased,
    last_updated_at
from {{ source('fhir', 'patient_current') }}
