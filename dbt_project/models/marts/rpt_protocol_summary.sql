-- The whole clinic's headline figures: the "all courses" cohort of rpt_protocol_summary_by_cohort.
select
    protocol,
    instrument,
    rater,
    n_courses,
    n_evaluable,
    n_responders,
    n_remitters,
    n_worse,
    n_provisional,
    response_rate,
    remission_rate,
    worsening_rate,
    n_relapsed,
    median_relapse_free_days,
    median_ci_lower_days,
    median_ci_upper_days,
    reference_protocol,
    logrank_p_vs_reference
from {{ ref('rpt_protocol_summary_by_cohort') }}
where cohort_dimension = 'all'
order by protocol, instrument
