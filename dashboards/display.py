"""How the pages name, order and colour protocols and scales: read from the published dim_protocols and
dim_instruments marts (the dbt seeds own them), so a protocol or scale added to a seed appears everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field

# Okabe-Ito (safe for colour-blind readers), for a protocol whose seed row sets no colour; colour always means
# protocol, and scales are told apart by line style (clinician-rated solid, self-rated dashed)
FALLBACK_COLOURS = ("#000000", "#0072B2", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")


@dataclass
class Display:
    protocols: list[str] = field(default_factory=list)  # in display order
    instruments: list[str] = field(default_factory=list)  # in display order
    reference: str | None = None  # the comparator of the log-rank tests
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (clinician-rated, self-rated) compared
    labels: dict[str, str] = field(default_factory=dict)
    colours: dict[str, str] = field(default_factory=dict)  # protocol -> colour
    raters: dict[str, str] = field(default_factory=dict)  # instrument -> clinician | self

    def label(self, code: str | None) -> str:
        return self.labels.get(code or "", code or "–")

    def colour(self, protocol: str) -> str | None:
        return self.colours.get(protocol)

    def dash(self, instrument: str) -> str:
        return "dash" if self.raters.get(instrument) == "self" else "solid"


def display_from(marts: dict) -> Display:
    """The display rules of the published marts; without the dim marts (a warehouse published by an older
    version), the codes found in the report marts, as codes."""
    d = Display()
    protocols, instruments = marts.get("dim_protocols"), marts.get("dim_instruments")
    if protocols is not None and protocols.height:
        for k, r in enumerate(protocols.sort("display_order", nulls_last=True).iter_rows(named=True)):
            d.protocols.append(r["protocol"])
            d.labels[r["protocol"]] = r["protocol_label"] or r["protocol"]
            d.colours[r["protocol"]] = r["colour"] or FALLBACK_COLOURS[k % len(FALLBACK_COLOURS)]
            if r["is_reference"]:
                d.reference = r["protocol"]
    if instruments is not None and instruments.height:
        rows = list(instruments.sort("display_order", nulls_last=True).iter_rows(named=True))
        for r in rows:
            d.instruments.append(r["instrument"])
            d.labels[r["instrument"]] = r["display_label"] or r["instrument"]
            d.raters[r["instrument"]] = r["rater"]
        d.pairs = [(r["instrument"], r["concordance_partner"]) for r in rows if r["concordance_partner"]]
    survival = marts.get("rpt_relapse_free_survival")
    if not d.protocols and survival is not None:
        d.protocols = sorted(set(survival["protocol"].to_list()))
        d.colours.update({p: FALLBACK_COLOURS[k % len(FALLBACK_COLOURS)] for k, p in enumerate(d.protocols)})
    if not d.instruments and survival is not None:
        d.instruments = sorted(set(survival["instrument"].to_list()))
    return d
