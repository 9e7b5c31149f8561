-- The instruments as the reports show them: label with its rater, order, and the self-rated scale a
-- clinician-rated one is compared with. (Colour means protocol on every page; scales differ by line style.)
select
    instrument,
    any_value(instrument_label) as instrument_label,
    any_value(rater) as rater,
    any_value(instrument_label) || ' (' || any_value(rater) || ')' as display_label,
    min(display_order) as display_order,
    any_value(nullif(concordance_partner, '')) as concordance_partner,
    any_value(remission_max) as remission_max,
    any_value(single_visit_relapse_min) as single_visit_relapse_min,
    bool_or(is_outcome) as is_outcome
from {{ ref('instrument_catalogue') }}
group by instrument
