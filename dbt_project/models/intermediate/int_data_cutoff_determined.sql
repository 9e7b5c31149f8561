-- The data cut-off: the EHR's clock at the newest committed load (its transactionTime), the instant up to
-- which the warehouse knows what happened. Courses still open at it have provisional outcomes.
select coalesce(max(transaction_at), now()) as cutoff_at
from {{ source('fhir', 'load_log') }}
where status = 'committed'
