-- Counts only: a reason is the expectation's name or the load rule (the text before a load reason's ':'),
-- never a record's content.
with by_gate as (
    select 'quality gate' as stage, expectation as reason, count(*) as records
    from {{ source('quality', 'quarantined_records') }}
    group by all
),

at_load as (
    select 'load' as stage, regexp_replace(reason, ':.*$', '') as reason, count(*) as records
    from {{ source('fhir', 'quarantine') }}
    group by all
)

select * from by_gate
union all
select * from at_load
