"""The study report's reading ("what the numbers say"): every comparison backed by a paired test.

Each sentence compares two accuracies measured on the same test clips and asks
:class:`reporting.stats.Comparisons` for the word: "higher than" / "lower than" only when the exact
two-sided McNemar test on the discordant clips gives p < 0.05, else "about the same as"; the counts and
the p-value follow in brackets. Every accuracy is printed with its Wilson 95% interval.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from reporting.per_sample import WORST_CASE, PerSample, row_key
from reporting.stats import Comparisons, fmt_acc_ci

Row = Mapping[str, Any]
PATTERNS = {"audio": (True, False), "visual": (False, True), "both": (True, True), "clean": (False, False)}


class ReadingView(Protocol):
    """What the reading needs from a study (a subset of ``reporting.study_findings.StudyView``)."""

    fusions: Sequence[str]

    def results(self, run_id: str, name: str = "results", surface: bool = False) -> List[Dict[str, Any]]: ...

    def has_results(self, run_id: str, name: str, surface: bool = False) -> bool: ...

    def per_sample(self, run_id: str, surface: bool = False) -> PerSample: ...


def _capitalised(sentence: str) -> str:
    """``sentence`` with its first letter upper-cased (a reading that starts a sentence)."""
    return sentence[:1].upper() + sentence[1:]


def find_row(rows: Sequence[Row], attack: str, pattern: str) -> Optional[Row]:
    """The row of ``attack`` whose attacked modalities match ``pattern`` (audio, visual, both, clean)."""
    a, v = PATTERNS[pattern]
    for r in rows:
        if r["attack"] == attack and (r["eps_audio"] > 0) == a and (r["eps_visual"] > 0) == v:
            return r
    return None


def acc_text(row: Optional[Row], key: str = "adv_acc") -> str:
    """An accuracy of a result row with its Wilson 95% interval ('—' without a row)."""
    if row is None or row.get(key) is None:
        return "—"
    n = int(row["n_samples"])
    return fmt_acc_ci(int(round(float(row[key]) * n)), n)


class Reader:
    """Per-clip correctness of the study's rows, looked up by run and row, with one comparison ledger."""

    def __init__(self, s: ReadingView) -> None:
        self.s, self.ledger = s, Comparisons()
        self._cache: Dict[str, PerSample] = {}

    def clips(self, run_id: str, row: Row, attack: Optional[str] = None) -> Dict[int, bool]:
        """The per-clip correctness of ``row`` of run ``run_id`` (``attack`` overrides the row's name)."""
        if run_id not in self._cache:
            self._cache[run_id] = self.s.per_sample(run_id)
        key = row_key(attack or row["attack"], row["eps_audio"], row["eps_visual"])
        table = self._cache[run_id]
        if key not in table:
            raise KeyError(f"{run_id}: per_sample.json has no row {key}; rows: {sorted(table)}")
        return table[key]

    def clean_clips(self, run_id: str, rows: Sequence[Row]) -> Dict[int, bool]:
        """Per-clip clean correctness: the (attack, 0, 0) row of the first attack that has one."""
        for r in rows:
            if r["eps_audio"] == 0 and r["eps_visual"] == 0:
                return self.clips(run_id, r)
        raise KeyError(f"{run_id}: no clean row (eps 0, 0) in its results")

    def says(self, what: str, a_name: str, a: Dict[int, bool], b_name: str, b: Dict[int, bool]) -> str:
        """'A is higher than / lower than / about the same as B (exact McNemar ...)', recorded."""
        return self.ledger.sentence(self.ledger.compare(what, a, b), a_name, b_name)


def readings(s: ReadingView, defense_rows: Sequence[Tuple[str, str]]) -> Tuple[List[str], Comparisons]:
    """The reading's sentences and the ledger of their tests. ``defense_rows``: (label, run id) of the
    defence table, in order."""
    rd = Reader(s)
    out: List[str] = []
    A, V, AV = s.results("audio"), s.results("visual"), s.results("concat")
    ca, cv, cav = rd.clean_clips("audio", A), rd.clean_clips("visual", V), rd.clean_clips("concat", AV)
    ra, rv = A[0], V[0]
    best_uni, best_clips = ("audio", ca) if ra["clean_acc"] >= rv["clean_acc"] else ("visual", cv)
    out.append(f"Clean accuracy: audio {acc_text(ra, 'clean_acc')}, visual {acc_text(rv, 'clean_acc')}, audio-visual "
               f"(concat) {acc_text(AV[0], 'clean_acc')}. "
               + _capitalised(rd.says("clean: concat vs better unimodal", "the audio-visual model", cav,
                                      f"the better unimodal model ({best_uni})", best_clips)) + ".")
    for attack in sorted({r["attack"] for r in AV}):
        xa, xv = find_row(A, attack, "audio"), find_row(V, attack, "visual")
        ya, yv, yb = (find_row(AV, attack, p) for p in ("audio", "visual", "both"))
        if not all((xa, xv, ya, yv, yb)):
            continue
        name = attack.upper() if attack != "autoattack" else "AutoAttack"
        better = ("audio", xa) if xa["adv_acc"] >= xv["adv_acc"] else ("visual", xv)
        out.append(
            f"{name}: with only the audio attacked, the audio model keeps {acc_text(xa)} and the audio-visual model "
            f"{acc_text(ya)}; " + rd.says(f"{attack} audio: concat vs audio", "the audio-visual model",
                                          rd.clips("concat", ya), "the audio model", rd.clips("audio", xa))
            + f". With only the visual input attacked, the visual model keeps {acc_text(xv)} and the audio-visual "
            f"model {acc_text(yv)}; " + rd.says(f"{attack} visual: concat vs visual", "the audio-visual model",
                                                rd.clips("concat", yv), "the visual model", rd.clips("visual", xv))
            + f". With both attacked (half the budget each) the audio-visual model keeps {acc_text(yb)}; "
            + rd.says(f"{attack} both: concat vs better unimodal under its attack", "it", rd.clips("concat", yb),
                      f"the better unimodal model under its own attack ({better[0]})",
                      rd.clips(better[0], better[1])) + ".")
    heads = {h: find_row(s.results(h), "pgd", "both") for h in s.fusions}
    heads = {h: r for h, r in heads.items() if r is not None}
    if len(heads) > 1:
        best = max(heads, key=lambda h: heads[h]["adv_acc"])
        worst = min(heads, key=lambda h: heads[h]["adv_acc"])
        out.append("Fusion heads under PGD on both inputs: " + ", ".join(f"{h} {acc_text(r)}" for h, r in heads.items())
                   + f". The highest is {best}: " + rd.says("fusion: most vs least robust head under PGD both", best,
                                                            rd.clips(best, heads[best]), f"the lowest ({worst})",
                                                            rd.clips(worst, heads[worst])) + ".")
    for label, rid in defense_rows:
        pgd = find_row(s.results(rid), "pgd", "both")
        if pgd is None or not s.has_results(rid, "robustness"):
            continue
        rob = next((r for r in s.results(rid, "robustness") if r["eps_audio"] > 0 and r["eps_visual"] > 0), None)
        if rob is None:
            continue
        worst_clips = rd.clips(rid, rob, attack=WORST_CASE)
        out.append(f"{label}: PGD as the paper ran it leaves {acc_text(pgd)} on both inputs; the per-clip worst case "
                   f"over the adaptive attacks leaves {acc_text(rob, 'robust_acc')}; "
                   + rd.says(f"{label}: paper PGD vs adaptive worst case", "the paper attack's accuracy",
                             rd.clips(rid, pgd), "the adaptive worst case", worst_clips)
                   + f". Gradient-masking flags: {rob.get('flags', 'none')}.")
    adv, plain = find_row(s.results("advtrain"), "pgd", "both"), find_row(AV, "pgd", "both")
    if adv is not None and plain is not None:
        out.append(f"PGD adversarial training keeps {acc_text(adv)} under PGD on both inputs (plain concat "
                   f"{acc_text(plain)}); " + rd.says("advtrain vs plain concat under PGD both",
                                                     "the adversarially trained model", rd.clips("advtrain", adv),
                                                     "the plain model", rd.clips("concat", plain))
                   + f"; its clean accuracy is {acc_text(adv, 'clean_acc')}.")
    out.append(rd.ledger.summary())
    return out, rd.ledger


__all__ = ["PATTERNS", "ReadingView", "find_row", "acc_text", "Reader", "readings"]
