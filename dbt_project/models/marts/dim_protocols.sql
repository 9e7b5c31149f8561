-- The treatment protocols as the reports show them: label, order, colour, and which one is the comparator.
select
    protocol,
    protocol_label,
    display_order,
    colour,
    is_reference
from {{ ref('protocols') }}
