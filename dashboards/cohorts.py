"""The pages' cohort filter: every course, one site's (in a network), courses started in one quarter, or the
courses of one diagnosis group.

Static pages: each cohort's figures and tables are drawn from the *_by_cohort marts when the page is built and
a select shows one cohort at a time. A cohort is offered only when at least one of its figures can be shown
under the disclosure rule; the rule is the same for every cohort (dashboards/suppression.py).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

ALL = ("all", "all")
DIMENSIONS = {"site": "Site", "start_quarter": "Course start", "diagnosis": "Diagnosis"}


@dataclass(frozen=True)
class Cohort:
    dimension: str
    key: str
    label: str

    @property
    def is_all(self) -> bool:
        return (self.dimension, self.key) == ALL

    @property
    def suffix(self) -> str:
        """Appended to element ids: none for the whole clinic, so its ids are the pages' usual ones."""
        return "" if self.is_all else f"-{self.dimension}-{self.key}"

    @property
    def value(self) -> str:
        return f"{self.dimension}:{self.key}"


EVERY_COURSE = Cohort("all", "all", "All courses")


def cohorts_of(marts: dict, source: str) -> list[Cohort]:
    """The cohorts in a *_by_cohort mart: every course first, then start quarters in time order, then diagnosis
    groups by name. Only every course when the mart is absent (a warehouse published by an older version)."""
    frame = marts.get(source)
    if frame is None or frame.height == 0:
        return [EVERY_COURSE]
    found = {
        Cohort(r["cohort_dimension"], r["cohort"], r["cohort_label"])
        for r in frame.select("cohort_dimension", "cohort", "cohort_label").unique().iter_rows(named=True)
        if (r["cohort_dimension"], r["cohort"]) != ALL
    }
    order = list(DIMENSIONS)
    return [EVERY_COURSE] + sorted(
        (c for c in found if c.dimension in DIMENSIONS),
        key=lambda c: (order.index(c.dimension), c.key if c.dimension in ("start_quarter", "site") else c.label),
    )


def sliced(marts: dict, cohort: Cohort, replacements: dict[str, str]) -> dict:
    """The marts as one cohort sees them: each mart named in `replacements` (whole-clinic name -> by-cohort
    name) is the cohort's rows of the by-cohort mart, without the cohort columns."""
    import polars as pl

    out = dict(marts)
    for plain, by_cohort in replacements.items():
        frame = marts.get(by_cohort)
        if frame is None:
            continue  # an older warehouse: the whole clinic's mart, and only the whole clinic is offered
        out[plain] = frame.filter(
            (pl.col("cohort_dimension") == cohort.dimension) & (pl.col("cohort") == cohort.key)
        ).drop("cohort_dimension", "cohort", "cohort_label")
    return out


def filtered_sections(
    cohorts: list[Cohort], render: Callable[[Cohort], tuple[str, bool]], filter_id: str, what: str
) -> str:
    """A select and one section per cohort (`render` returns the section's HTML and whether anything in it can
    be shown); the whole clinic's section is always kept and shown first."""
    kept: list[tuple[Cohort, str]] = []
    withheld = 0
    for cohort in cohorts:
        body, showable = render(cohort)
        if showable or cohort.is_all:
            kept.append((cohort, body))
        else:
            withheld += 1
    if len(kept) == 1:
        return kept[0][1]
    options = ['<option value="all:all" selected>All courses</option>']
    for dimension, title in DIMENSIONS.items():
        group = [c for c, _ in kept if c.dimension == dimension]
        if group:
            options.append(
                f'<optgroup label="{html.escape(title)}">'
                + "".join(f'<option value="{html.escape(c.value)}">{html.escape(c.label)}</option>' for c in group)
                + "</optgroup>"
            )
    note = (
        f" {withheld} more {'cohort is' if withheld == 1 else 'cohorts are'} not offered: too few courses to "
        "show any figure without revealing a count from 1 to 10."
        if withheld
        else ""
    )
    # cohorts not chosen are laid out off-screen at full width rather than hidden, so that plotly sizes their
    # figures, legends and risk tables as it does the visible one
    sections = "".join(
        f'<div class="cohort-section{"" if c.is_all else " off-screen"}" data-cohort="{html.escape(c.value)}">'
        f"{body}</div>"
        for c, body in kept
    )
    return (
        f'<p class="cohort-filter"><label for="{filter_id}"><b>Courses:</b></label> '
        f'<select id="{filter_id}" data-filters="{html.escape(what)}">{"".join(options)}</select>'
        f' <span class="meta">{html.escape(what)} for the chosen courses.{html.escape(note)}</span></p>'
        f"<style>.cohort-sections{{position:relative}} .cohort-section.off-screen{{position:absolute;top:0;"
        f"left:-20000px;width:100%;visibility:hidden}}</style>"
        f'<div class="cohort-sections" id="{filter_id}-sections">{sections}</div>'
        f"<script>(function(){{var s=document.getElementById('{filter_id}');"
        f"var box=document.getElementById('{filter_id}-sections');"
        "s.addEventListener('change',function(){box.querySelectorAll(':scope > .cohort-section').forEach("
        "function(d){var on=d.dataset.cohort===s.value;d.classList.toggle('off-screen',!on);"
        "if(on&&window.Plotly){d.querySelectorAll('.plotly-graph-div').forEach(function(g){"
        "Plotly.Plots.resize(g);});}});});})();</script>"
    )
