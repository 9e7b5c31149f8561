{#- Response criterion against the baseline, per the instrument's rule (seeds/instrument_catalogue.csv).
    A tiny tolerance keeps exact boundary cases (e.g. 30 -> 21 on a 30% rule) on the responder side. -#}
{% macro meets_response(baseline, score, rule, threshold) -%}
    case {{ rule }}
        when 'pct_drop' then ({{ baseline }} - {{ score }}) >= {{ threshold }} * {{ baseline }} - 1e-9
        when 'points_drop' then ({{ baseline }} - {{ score }}) >= {{ threshold }} - 1e-9
    end
{%- endmacro %}

{#- Remission: at or below the instrument's threshold (and, where the instrument says so, responding). -#}
{% macro meets_remission(score, remission_max, requires_response, responds) -%}
    case when {{ remission_max }} is null then null
         else {{ score }} <= {{ remission_max }} and (not {{ requires_response }} or coalesce({{ responds }}, false))
    end
{%- endmacro %}

{#- The course x instrument outcomes that rates and curves count: final evaluable ones, and provisional ones
    (courses open at the cut-off) only when include_provisional_outcomes is switched on. -#}
{% macro counted_in_rates(relation_alias=none) -%}
    {%- set p = relation_alias ~ '.' if relation_alias else '' -%}
    {%- if var('include_provisional_outcomes') -%}
        ({{ p }}evaluability = 'evaluable' or ({{ p }}evaluability = 'provisional' and {{ p }}is_responder is not null))
    {%- else -%}
        {{ p }}evaluability = 'evaluable'
    {%- endif -%}
{%- endmacro %}

{#- The severity the outcome rules judge: the score, or for a scale where more is better (days abstinent)
    the distance from its maximum (days of use). -#}
{% macro severity(score, catalogue_alias) -%}
    case when coalesce({{ catalogue_alias }}.severity_reversed, false)
         then {{ catalogue_alias }}.max_score - {{ score }} else {{ score }} end
{%- endmacro %}
