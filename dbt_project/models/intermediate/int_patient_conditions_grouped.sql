-- Each patient's diagnosis groups (the condition_groups seed) from their ICD-10-CM conditions, leaving out
-- those entered in error or refuted.
with codings as (
    select patient_id, {{ unnest_list('codings') }} as coding
    from {{ ref('stg_fhir__conditions') }}
    where coalesce(verification_status, 'confirmed') not in ('entered-in-error', 'refuted')
)

select distinct codings.patient_id, groups.condition_group, groups.group_label
from codings
inner join {{ ref('condition_groups') }} as groups
    on codings.coding.system = 'http://hl7.org/fhir/sid/icd-10-cm'
    and left(codings.coding.code, length(groups.code_prefix)) = groups.code_prefix
