{{ config(materialized='incremental', schema='restricted', unique_key='patient_id', full_refresh=false) }}
-- The only link between EHR patient ids and the random surrogate keys used in marts. Kept in the
-- restricted schema; keys are random (never derived from an identifier) and never change once issued,
-- which is why this model ignores --full-refresh.
select
    patients.patient_id,
    {{ random_key() }} as patient_key,
    now() as keyed_at
from {{ ref('stg_fhir__patients') }} as patients
{% if is_incremental() %}
where patients.patient_id not in (select patient_id from {{ this }})
{% endif %}
