-- Built by the publish step once both quality gates have passed (not by the nightly `dbt build`): the
-- health of the night whose marts are being published, for the pages' data-health panel and the analysts.
with latest_gate as (
    select suite, success, warnings,
           row_number() over (partition by suite order by started_at desc) as recency
    from {{ source('quality', 'validation_runs') }}
),

committed_loads as (
    select max(transaction_at) as data_as_of, max(finished_at) as last_load_at
    from {{ source('fhir', 'load_log') }}
    where status = 'committed'
)

select
    now() as published_at,
    committed_loads.data_as_of,
    committed_loads.last_load_at,
    (select success from latest_gate where suite = 'raw' and recency = 1) as raw_gate_passed,
    (select success from latest_gate where suite = 'marts' and recency = 1) as marts_gate_passed,
    (select sum(warnings)::bigint from latest_gate where recency = 1) as warnings,
    (select count(*) from {{ source('quality', 'quarantined_records') }}) as quarantined_by_gate,
    (select count(*) from {{ source('fhir', 'quarantine') }}) as quarantined_at_load
from committed_loads
