-- The whole clinic's curves: the "all courses" cohort of rpt_relapse_free_survival_by_cohort.
select protocol, instrument, day, n_at_risk, n_relapsed, n_censored, survival, ci_lower, ci_upper
from {{ ref('rpt_relapse_free_survival_by_cohort') }}
where cohort_dimension = 'all'
order by protocol, instrument, day
