-- Clinician-rated vs self-rated scales on the same courses: agreement on response, Cohen's kappa and the
-- correlation of percent change. Their disagreement is a finding, not noise.
with outcomes as (
    select * from {{ ref('fct_course_outcomes') }} where {{ counted_in_rates() }}
),

pairs as (
    select
        clinician.protocol,
        clinician.instrument as clinician_instrument,
        self_rated.instrument as self_instrument,
        clinician.is_responder as clinician_responder,
        self_rated.is_responder as self_responder,
        clinician.pct_change as clinician_pct_change,
        self_rated.pct_change as self_pct_change
    from outcomes as clinician
    inner join outcomes as self_rated
        on clinician.course_id = self_rated.course_id
        and clinician.rater = 'clinician' and self_rated.rater = 'self'
),

tallies as (
    select
        protocol,
        clinician_instrument,
        self_instrument,
        count(*) as n_courses,
        avg((clinician_responder = self_responder)::integer) as observed_agreement,
        avg(clinician_responder::integer) as clinician_response_rate,
        avg(self_responder::integer) as self_response_rate,
        count(*) filter (where clinician_responder and self_responder) as n_both_respond,
        count(*) filter (where clinician_responder and not self_responder) as n_clinician_only,
        count(*) filter (where not clinician_responder and self_responder) as n_self_only,
        count(*) filter (where not clinician_responder and not self_responder) as n_neither,
        -- undefined (fewer than two pairs, or no variation): NULL on every engine, never NaN
        case when not isnan(corr(clinician_pct_change, self_pct_change))
             then corr(clinician_pct_change, self_pct_change) end as pct_change_correlation
    from pairs
    group by all
)

select
    *,
    clinician_response_rate * self_response_rate
        + (1 - clinician_response_rate) * (1 - self_response_rate) as expected_agreement,
    case when 1 - (clinician_response_rate * self_response_rate
                   + (1 - clinician_response_rate) * (1 - self_response_rate)) > 0
         then (observed_agreement - (clinician_response_rate * self_response_rate
                                     + (1 - clinician_response_rate) * (1 - self_response_rate)))
              / (1 - (clinician_response_rate * self_response_rate
                      + (1 - clinician_response_rate) * (1 - self_response_rate)))
    end as cohens_kappa
from tallies
order by protocol, clinician_instrument, self_instrument
