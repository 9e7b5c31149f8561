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
