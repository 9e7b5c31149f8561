-- Kaplan-Meier relapse-free survival per cohort x protocol x instrument among responders: at each day with a
-- relapse or a censoring, n at risk (time >= day), relapses, censored; S = prod(1 - d/n); Greenwood
-- variance; 95% interval on the log(-log) scale (exponential Greenwood, lifelines' and R's default).
with durations as (
    select cohorts.cohort_dimension, cohorts.cohort, cohorts.cohort_label,
           outcomes.protocol, outcomes.instrument, outcomes.days_to_relapse_or_censor as day, outcomes.relapsed
    from {{ ref('fct_course_outcomes') }} as outcomes
    inner join {{ ref('int_course_cohorts_assigned') }} as cohorts on outcomes.course_id = cohorts.course_id
    where outcomes.is_responder and outcomes.days_to_relapse_or_censor is not null and {{ counted_in_rates('outcomes') }}
),

per_day as (
    select cohort_dimension, cohort, cohort_label, protocol, instrument, day,
           count(*) filter (where relapsed) as n_relapsed,
           count(*) filter (where not relapsed) as n_censored
    from durations group by all
),

with_origin as (
    select * from per_day
    union all
    select distinct cohort_dimension, cohort, cohort_label, protocol, instrument, 0, 0, 0 from per_day as curve
    where not exists (
        select 1 from per_day as origin
        where origin.day = 0 and origin.cohort_dimension = curve.cohort_dimension and origin.cohort = curve.cohort
            and origin.protocol = curve.protocol and origin.instrument = curve.instrument
    )
),

at_risk as (
    select *,
           sum(n_relapsed + n_censored) over (partition by cohort_dimension, cohort, protocol, instrument
                                              order by day desc rows between unbounded preceding and current row) as n_at_risk
    from with_origin
),

steps as (
    select *,
           bool_or(n_relapsed = n_at_risk) over cumulative as reached_zero,
           sum(case when n_relapsed < n_at_risk then ln(1 - n_relapsed / n_at_risk) end) over cumulative as log_survival,
           sum(case when n_relapsed < n_at_risk then n_relapsed / (n_at_risk * (n_at_risk - n_relapsed)) end)
               over cumulative as greenwood_sum
    from at_risk
    window cumulative as (partition by cohort_dimension, cohort, protocol, instrument
                          order by day rows between unbounded preceding and current row)
),

survival as (
    select *, case when reached_zero then 0.0 else exp(coalesce(log_survival, 0)) end as survival
    from steps
)

select
    cohort_dimension,
    cohort,
    cohort_label,
    protocol,
    instrument,
    day,
    n_at_risk::bigint as n_at_risk,
    n_relapsed::bigint as n_relapsed,
    n_censored::bigint as n_censored,
    survival,
    case when survival >= 1 then 1.0
         when survival <= 0 then null
         else exp(-exp(ln(-ln(survival)) + 1.959963984540054 * sqrt(greenwood_sum) / abs(ln(survival))))
    end as ci_lower,
    case when survival >= 1 then 1.0
         when survival <= 0 then null
         else exp(-exp(ln(-ln(survival)) - 1.959963984540054 * sqrt(greenwood_sum) / abs(ln(survival))))
    end as ci_upper
from survival
order by cohort_dimension, cohort, protocol, instrument, day
