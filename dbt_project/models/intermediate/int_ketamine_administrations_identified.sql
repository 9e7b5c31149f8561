{{ config(
    materialized=incremental_where_supported(),
    unique_key='medication_administration_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    pre_hook="{{ delete_revised_resources('medication_administration_versions', 'medication_administration_id') }}",
) }}
-- Ketamine administrations: a coding in the value-set seed, else the medication text (or a coding's display)
-- naming ketamine. Incremental (macros/incremental.sql): this is where the MedicationAdministration JSON is
-- read; weights and quarantine, which change without a new version, are applied by int_infusions_identified.
with administrations as (
    select * from {{ ref('stg_fhir__medication_administrations') }}
    where administration_status in ('completed', 'in-progress') and started_at is not null
    {% if is_incremental() -%}
        and {{ revised_filter('medication_administration_versions', 'medication_administration_id') }}
    {%- endif %}
),

coded_ketamine as (
    {{ ids_coded_in('administrations', 'medication_administration_id', 'medication_codings',
                    'ketamine_medication_codes') }}
)

select
    administrations.medication_administration_id,
    administrations.patient_id,
    administrations.started_at,
    administrations.ended_at,
    administrations.route_code,
    administrations.dose_value,
    administrations.dose_unit,
    administrations.load_seq
from administrations
left join coded_ketamine using (medication_administration_id)
where coded_ketamine.medication_administration_id is not null
    or administrations.medication_text ilike '{{ var("ketamine_text_pattern") }}'
    or {{ list_any('administrations.medication_codings', 'c', "c.display ilike '" ~ var('ketamine_text_pattern') ~ "'") }}
