"""Corruption robustness summaries: accuracy per corruption and severity, the mean corruption accuracy, and
ImageNet-C's corruption errors against a reference model.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"
(ICLR 2019), Section 4 ("ImageNet-C Metrics"), with E the top-1 error (1 - accuracy), s the severities and c
the corruptions of model f and reference model ref (AlexNet there; here the study's plain concat model):

- corruption error          CE_c^f  = sum_s E_{s,c}^f / sum_s E_{s,c}^ref,           mCE = mean_c CE_c^f;
- relative corruption error rCE_c^f = sum_s (E_{s,c}^f - E_clean^f) / sum_s (E_{s,c}^ref - E_clean^ref),
                                                                                 relative mCE = mean_c rCE_c^f.

The paper reports them in percent; the functions here return fractions (1.0 = as the reference). A ratio
whose denominator is 0 (the reference never errs, or loses nothing under that corruption) is undefined and
returned as None, with the reason in the summary's ``undefined``. The mean corruption accuracy (mCA) is the
mean of the accuracies over every corruption and severity evaluated (each corruption weighs the same when each
has the same severities, which ``--severities`` guarantees).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from reporting.tables import Column, Table, fmt_generic, fmt_percent

Row = Mapping[str, Any]


def _by_corruption(rows: Sequence[Row]) -> Dict[str, Dict[int, float]]:
    """{corruption: {severity: corrupt_acc}} of corruption result rows (a repeated pair raises)."""
    out: Dict[str, Dict[int, float]] = {}
    for r in rows:
        c, s = str(r["corruption"]), int(r["severity"])
        if s in out.setdefault(c, {}):
            raise ValueError(f"two rows for corruption {c!r} at severity {s}")
        out[c][s] = float(r["corrupt_acc"])
    return out


def _clean(rows: Sequence[Row], clean_acc: Optional[float]) -> float:
    if clean_acc is not None:
        return float(clean_acc)
    values = {float(r["clean_acc"]) for r in rows}
    if len(values) != 1:
        raise ValueError(f"the rows disagree on the clean accuracy ({sorted(values)}): pass clean_acc")
    return values.pop()


def corruption_errors(rows: Sequence[Row], reference: Sequence[Row], clean_acc: Optional[float] = None,
                      reference_clean_acc: Optional[float] = None) -> Dict[str, Dict[str, Optional[float]]]:
    """Per corruption: ``{"ce": CE_c, "rce": rCE_c}`` of ``rows`` against ``reference`` (both corruption result
    rows: ``corruption``, ``severity``, ``corrupt_acc``, ``clean_acc``), over the severities both have; a
    corruption the reference lacks is left out. None where the ratio is undefined (denominator 0)."""
    mine, ref = _by_corruption(rows), _by_corruption(reference)
    e_clean, e_clean_ref = 1 - _clean(rows, clean_acc), 1 - _clean(reference, reference_clean_acc)
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for c, accs in mine.items():
        sev = sorted(set(accs) & set(ref.get(c, {})))
        if not sev:
            continue
        err = sum(1 - accs[s] for s in sev)
        err_ref = sum(1 - ref[c][s] for s in sev)
        rel = sum((1 - accs[s]) - e_clean for s in sev)
        rel_ref = sum((1 - ref[c][s]) - e_clean_ref for s in sev)
        out[c] = {"ce": err / err_ref if err_ref > 0 else None,
                  "rce": rel / rel_ref if rel_ref > 0 else None, "severities": len(sev)}
    return out


def corruption_summary(rows: Sequence[Row], reference: Optional[Sequence[Row]] = None,
                       clean_acc: Optional[float] = None, reference_clean_acc: Optional[float] = None
                       ) -> Dict[str, Any]:
    """The summary of one model's corruption rows: ``clean_acc``; ``mca`` (mean corruption accuracy);
    ``per_corruption`` {name: mean accuracy over its severities}; with a ``reference``'s rows also ``mce``,
    ``relative_mce`` (means over the corruptions where each is defined), ``errors`` (corruption_errors) and
    ``undefined`` (the corruptions left out of a mean, with the reason)."""
    if not rows:
        raise ValueError("corruption_summary needs at least one corruption row")
    by = _by_corruption(rows)
    out: Dict[str, Any] = {
        "clean_acc": _clean(rows, clean_acc),
        "mca": sum(a for accs in by.values() for a in accs.values()) / sum(len(a) for a in by.values()),
        "per_corruption": {c: sum(a.values()) / len(a) for c, a in sorted(by.items())},
    }
    if reference is not None:
        errs = corruption_errors(rows, reference, clean_acc, reference_clean_acc)
        ce = [e["ce"] for e in errs.values() if e["ce"] is not None]
        rce = [e["rce"] for e in errs.values() if e["rce"] is not None]
        out["errors"] = errs
        out["mce"] = sum(ce) / len(ce) if ce else None
        out["relative_mce"] = sum(rce) / len(rce) if rce else None
        undefined: List[str] = [f"{c}: no rows of the reference" for c in sorted(set(by) - set(errs))]
        undefined += [f"{c}: the reference makes no error (CE)" for c, e in sorted(errs.items()) if e["ce"] is None]
        undefined += [f"{c}: the reference loses nothing to it (relative CE)" for c, e in sorted(errs.items())
                      if e["rce"] is None]
        out["undefined"] = undefined
    return out


def severity_table(rows: Sequence[Row]) -> Table:
    """Accuracy per corruption (rows) and severity (columns), with each corruption's mean and the mCA row."""
    by = _by_corruption(rows)
    sevs: List[int] = sorted({s for a in by.values() for s in a})
    mods = {str(r["corruption"]): r.get("corruption_modality", "") for r in rows}
    cols = [Column("corruption", "corruption", fmt_generic, False), Column("modality", "changes", fmt_generic, False)]
    cols += [Column(f"s{s}", f"severity {s} (%)", fmt_percent, True) for s in sevs]
    cols += [Column("mean", "mean (%)", fmt_percent, True)]
    table_rows: List[Dict[str, Any]] = []
    for c, accs in sorted(by.items()):
        table_rows.append({"corruption": c, "modality": mods[c], **{f"s{s}": accs.get(s) for s in sevs},
                           "mean": sum(accs.values()) / len(accs)})
    summary = corruption_summary(rows)
    table_rows.append({"corruption": "mean corruption accuracy (mCA)", "modality": "",
                       **{f"s{s}": _mean([a[s] for a in by.values() if s in a]) for s in sevs},
                       "mean": summary["mca"]})
    return Table(cols, table_rows)


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


__all__ = ["corruption_errors", "corruption_summary", "severity_table"]
