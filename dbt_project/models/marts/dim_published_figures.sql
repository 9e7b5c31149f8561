-- Figures from the literature the pages draw beside the clinic's own (the published_figures seed): a
-- median or a point on a relapse-free curve, or a response or remission rate, with its citation and population.
select
    figure_id,
    citation,
    population,
    protocol,
    instrument,
    measure,
    day,
    value,
    label
from {{ ref('published_figures') }}
