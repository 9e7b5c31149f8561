-- Per cohort x protocol x instrument: courses, evaluable, response and remission rates, median relapse-free days
-- (from the Kaplan-Meier table, with the median's 95% interval) and the log-rank p-value against the reference
-- protocol (the protocols seed's `is_reference`, ketamine alone by default) within the cohort. In SQL so that
-- every engine computes it the same way (tests compare it with lifelines).
with outcomes as (
    select
        cohorts.cohort_dimension, cohorts.cohort, cohorts.cohort_label,
        outcomes.course_id, outcomes.protocol, outcomes.instrument, outcomes.rater, outcomes.evaluability,
        outcomes.is_responder, outcomes.is_remitter, outcomes.is_worse, outcomes.relapsed,
        outcomes.days_to_relapse_or_censor,
        {{ counted_in_rates('outcomes') }} as counted
    from {{ ref('fct_course_outcomes') }} as outcomes
    inner join {{ ref('int_course_cohorts_assigned') }} as cohorts on outcomes.course_id = cohorts.course_id
),

reference as (
    select min(protocol) as reference_protocol from {{ ref('protocols') }} where is_reference
),

rates as (
    select
        cohort_dimension, cohort, cohort_label, protocol, instrument,
        min(rater) as rater,
        count(distinct course_id) as n_courses,
        count(case when counted then 1 end) as n_evaluable,
        count(case when counted and is_responder then 1 end) as n_responders,
        count(case when counted and is_remitter is not null then 1 end) as n_remission_judged,
        count(case when counted and is_remitter then 1 end) as n_remitters,
        count(case when counted and is_worse then 1 end) as n_worse,
        count(case when evaluability = 'provisional' then 1 end) as n_provisional,
        count(case when counted and relapsed then 1 end) as n_relapsed
    from outcomes
    group by cohort_dimension, cohort, cohort_label, protocol, instrument
),

medians as (
    -- the first day a curve reaches one half (the median) and where its interval's bounds do (Brookmeyer-
    -- Crowley, as lifelines and R's survfit); a bound that is NULL once survival is 0 counts as 0. The curve
    -- is exp(sum of logs): a survival of exactly one half can arrive as 0.5000000000000001.
    select
        cohort_dimension, cohort, protocol, instrument,
        cast(min(case when survival <= 0.5 + 1e-9 then day end) as double) as median_relapse_free_days,
        cast(min(case when coalesce(ci_lower, 0) <= 0.5 + 1e-9 then day end) as double) as median_ci_lower_days,
        cast(min(case when coalesce(ci_upper, 0) <= 0.5 + 1e-9 then day end) as double) as median_ci_upper_days
    from {{ ref('rpt_relapse_free_survival_by_cohort') }}
    group by cohort_dimension, cohort, protocol, instrument
),

responders as (
    select cohort_dimension, cohort, instrument, protocol, days_to_relapse_or_censor as day,
           coalesce(relapsed, false) as relapsed
    from outcomes
    where counted and is_responder and days_to_relapse_or_censor is not null
),

-- Log-rank test (two samples, one degree of freedom) of each protocol against the reference, among responders
-- of the same cohort and instrument: at each day with a relapse, n at risk (day >= that day) and d relapses in
-- both samples together and in the protocol's; U = (sum(d_p - d n_p / n))^2 / sum(d n_p n_r (n - d) / (n^2 (n - 1)));
-- p = P(chi2_1 > U) = erfc(sqrt(U / 2)). No test without responders in both samples or without any relapse.
tested as (
    select distinct mine.cohort_dimension, mine.cohort, mine.instrument, mine.protocol, reference.reference_protocol
    from responders as mine
    cross join reference
    where mine.protocol <> reference.reference_protocol
        and exists (
            select 1 from responders as theirs
            where theirs.protocol = reference.reference_protocol and theirs.cohort_dimension = mine.cohort_dimension
                and theirs.cohort = mine.cohort and theirs.instrument = mine.instrument
        )
),

samples as (
    select tested.cohort_dimension, tested.cohort, tested.instrument, tested.protocol,
           responders.day, responders.relapsed, responders.protocol = tested.protocol as is_protocol
    from tested
    inner join responders
        on responders.cohort_dimension = tested.cohort_dimension and responders.cohort = tested.cohort
        and responders.instrument = tested.instrument
        and responders.protocol in (tested.protocol, tested.reference_protocol)
),

relapse_days as (
    select distinct cohort_dimension, cohort, instrument, protocol, day from samples where relapsed
),

at_relapse_days as (
    select
        relapse_days.cohort_dimension, relapse_days.cohort, relapse_days.instrument, relapse_days.protocol,
        relapse_days.day,
        count(case when samples.day >= relapse_days.day then 1 end) as n,
        count(case when samples.day >= relapse_days.day and samples.is_protocol then 1 end) as n_protocol,
        count(case when samples.day = relapse_days.day and samples.relapsed then 1 end) as d,
        count(case when samples.day = relapse_days.day and samples.relapsed and samples.is_protocol then 1 end)
            as d_protocol
    from relapse_days
    inner join samples
        on samples.cohort_dimension = relapse_days.cohort_dimension and samples.cohort = relapse_days.cohort
        and samples.instrument = relapse_days.instrument and samples.protocol = relapse_days.protocol
    group by relapse_days.cohort_dimension, relapse_days.cohort, relapse_days.instrument, relapse_days.protocol,
             relapse_days.day
),

statistics as (
    select
        cohort_dimension, cohort, instrument, protocol,
        sum(d_protocol - d * n_protocol / n) as observed_minus_expected,
        sum(case when n > 1 then d * n_protocol * (n - n_protocol) * (n - d) / (n * n * (n - 1.0)) else 0 end)
            as variance
    from at_relapse_days
    group by cohort_dimension, cohort, instrument, protocol
),

statistics_x as (
    -- x = sqrt(U / 2); a zero variance gives U = 0 (p = 1), as lifelines' pseudo-inverse does
    select *,
        case when variance > 0 then sqrt(observed_minus_expected * observed_minus_expected / variance / 2) else 0 end
            as x
    from statistics
),

series as (
    -- ln((2k + 1)!!) for the terms of erf(x) = 2/sqrt(pi) exp(-x^2) sum_k x (2x^2)^k / (2k + 1)!!, a series of
    -- positive terms (no cancellation); 160 terms reach double precision for x <= 6
    select k, sum(ln(2 * k + 1)) over (order by k rows between unbounded preceding and current row)
        as ln_odd_double_factorial
    from {{ integers_below(160) }} as integers
),

p_values as (
    select
        statistics_x.cohort_dimension, statistics_x.cohort, statistics_x.instrument, statistics_x.protocol,
        case
            when statistics_x.x = 0 then 1.0
            -- beyond 6, erfc(x) < 2e-17: its asymptotic series
            when statistics_x.x > 6 then
                exp(-statistics_x.x * statistics_x.x) / (statistics_x.x * sqrt(pi()))
                * (1 - 1 / (2 * statistics_x.x * statistics_x.x)
                     + 3 / (4 * statistics_x.x * statistics_x.x * statistics_x.x * statistics_x.x))
            else greatest(0.0, 1 - sum(case when statistics_x.x > 0 and statistics_x.x <= 6 then
                exp(ln(2) - 0.5 * ln(pi()) - statistics_x.x * statistics_x.x + ln(statistics_x.x)
                    + series.k * ln(2 * statistics_x.x * statistics_x.x) - series.ln_odd_double_factorial) end))
        end as p_value
    from statistics_x
    cross join series
    group by statistics_x.cohort_dimension, statistics_x.cohort, statistics_x.instrument, statistics_x.protocol,
             statistics_x.x
)

select
    rates.cohort_dimension,
    rates.cohort,
    rates.cohort_label,
    rates.protocol,
    rates.instrument,
    rates.rater,
    rates.n_courses,
    rates.n_evaluable,
    rates.n_responders,
    rates.n_remitters,
    rates.n_worse,
    rates.n_provisional,
    rates.n_responders / nullif(rates.n_evaluable, 0) as response_rate,
    rates.n_remitters / nullif(rates.n_remission_judged, 0) as remission_rate,
    rates.n_worse / nullif(rates.n_evaluable, 0) as worsening_rate,
    rates.n_relapsed,
    medians.median_relapse_free_days,
    medians.median_ci_lower_days,
    medians.median_ci_upper_days,
    reference.reference_protocol,
    p_values.p_value as logrank_p_vs_reference
from rates
cross join reference
left join medians
    on medians.cohort_dimension = rates.cohort_dimension and medians.cohort = rates.cohort
    and medians.protocol = rates.protocol and medians.instrument = rates.instrument
left join p_values
    on p_values.cohort_dimension = rates.cohort_dimension and p_values.cohort = rates.cohort
    and p_values.protocol = rates.protocol and p_values.instrument = rates.instrument
order by rates.cohort_dimension, rates.cohort, rates.protocol, rates.instrument
