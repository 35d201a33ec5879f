"""The study report's reading ("what the numbers say"): every comparison backed by a paired test.

Each sentence compares two accuracies measured on the same test clips and asks
:class:`reporting.stats.Comparisons` for the word: "higher than" / "lower than" only when the exact
two-sided McNemar test on the discordant clips gives p < 0.05, else "about the same as"; the counts and
the p-value follow in brackets. Every accuracy is printed with its Wilson 95% interval.

A study of several seeds has one run of each model per seed; every accuracy is then the mean over seeds with
its range (``reporting.stats.fmt_acc_seeds``) and every comparison is tested in each seed both models were run
with: "higher" / "lower" only when every seed's test agrees (``reporting.stats.SeedPaired``), a finding that
flips between seeds is said to.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from reporting.per_sample import WORST_CASE, PerSample, row_key
from reporting.stats import Comparisons, fmt_acc_ci, fmt_acc_seeds

Row = Mapping[str, Any]
SeedRows = Dict[int, List[Dict[str, Any]]]  # seed -> the result rows of one model's evaluation in that seed
SeedRow = Dict[int, Row]  # seed -> one row (seeds without such a row left out)
Clips = Dict[int, Dict[int, bool]]  # seed -> {dataset index: correct}
PATTERNS = {"audio": (True, False), "visual": (False, True), "both": (True, True), "clean": (False, False)}


class ReadingView(Protocol):
    """What the reading needs from a study (a subset of ``reporting.study_findings.StudyView``)."""

    fusions: Sequence[str]

    def model_seeds(self, run_id: str) -> List[int]: ...  # the seeds the study ran this model with

    def results(self, run_id: str, name: str = "results", surface: bool = False,
                seed: Optional[int] = None) -> List[Dict[str, Any]]: ...

    def has_results(self, run_id: str, name: str, surface: bool = False, seed: Optional[int] = None) -> bool: ...

    def per_sample(self, run_id: str, surface: bool = False, seed: Optional[int] = None) -> PerSample: ...


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


def by_seed(s: ReadingView, run_id: str, name: str = "results", surface: bool = False) -> SeedRows:
    """The rows of ``run_id``'s recorded evaluation in each of its seeds."""
    return {k: s.results(run_id, name, surface, seed=k) for k in s.model_seeds(run_id)}


def kind_by_seed(s: Any, run_id: str, kind: str) -> SeedRows:
    """The rows of ``run_id``'s evaluation of ``kind`` (a study section's) in each seed that has one."""
    found = {k: s.kind_results(run_id, kind, seed=k) for k in s.model_seeds(run_id)}
    return {k: rows for k, rows in found.items() if rows}


def find_rows(rows: Mapping[int, Sequence[Row]], attack: str, pattern: str) -> SeedRow:
    """:func:`find_row` in every seed (seeds without the row left out)."""
    found = {k: find_row(r, attack, pattern) for k, r in rows.items()}
    return {k: r for k, r in found.items() if r is not None}


def acc_seeds(rows: Mapping[int, Optional[Row]], key: str = "adv_acc") -> str:
    """An accuracy over seeds: one seed with its Wilson 95% interval, several as mean, range and each seed's."""
    counts = {k: (int(round(float(r[key]) * int(r["n_samples"]))), int(r["n_samples"]))
              for k, r in rows.items() if r is not None and r.get(key) is not None}
    return fmt_acc_seeds(counts)


def clips_acc(clips: Mapping[int, Mapping[int, bool]]) -> str:
    """An accuracy over seeds from per-clip correctness ``{seed: {dataset index: correct}}`` (one seed: Wilson 95%
    interval; several: mean, range and each seed's)."""
    return fmt_acc_seeds({k: (sum(bool(v) for v in c.values()), len(c)) for k, c in clips.items()})


def mean_acc(rows: Mapping[int, Row], key: str = "adv_acc") -> float:
    """The mean of ``key`` over seeds (for choosing the better model of a sentence)."""
    return sum(float(r[key]) for r in rows.values()) / len(rows)


def first_row(rows: Mapping[int, Sequence[Row]]) -> SeedRow:
    """The first row of each seed's evaluation (its clean accuracy is the evaluation's)."""
    return {k: r[0] for k, r in rows.items() if r}


class Reader:
    """Per-clip correctness of the study's rows, looked up by run, seed and row, with one comparison ledger."""

    def __init__(self, s: ReadingView) -> None:
        self.s, self.ledger = s, Comparisons()
        self._cache: Dict[Tuple[str, int], PerSample] = {}

    def clips(self, run_id: str, rows: Mapping[int, Row], attack: Optional[str] = None) -> Clips:
        """The per-clip correctness of each seed's row of run ``run_id`` (``attack`` overrides the rows' name)."""
        out: Clips = {}
        for seed, row in rows.items():
            if (run_id, seed) not in self._cache:
                self._cache[(run_id, seed)] = self.s.per_sample(run_id, seed=seed)
            key = row_key(attack or row["attack"], row["eps_audio"], row["eps_visual"])
            table = self._cache[(run_id, seed)]
            if key not in table:
                raise KeyError(f"{run_id} (seed {seed}): per_sample.json has no row {key}; rows: {sorted(table)}")
            out[seed] = table[key]
        return out

    def clean_clips(self, run_id: str, rows: Mapping[int, Sequence[Row]]) -> Clips:
        """Per-clip clean correctness in each seed: the (attack, 0, 0) row of the first attack that has one."""
        out: Clips = {}
        for seed, seed_rows in rows.items():
            clean = next((r for r in seed_rows if r["eps_audio"] == 0 and r["eps_visual"] == 0), None)
            if clean is None:
                raise KeyError(f"{run_id} (seed {seed}): no clean row (eps 0, 0) in its results")
            out.update(self.clips(run_id, {seed: clean}))
        return out

    def says(self, what: str, a_name: str, a: Clips, b_name: str, b: Clips) -> str:
        """'A is higher than / lower than / about the same as B (exact McNemar ...)', over the common seeds,
        recorded."""
        return self.ledger.sentence(self.ledger.compare(what, a, b), a_name, b_name)


def readings(s: ReadingView, defense_rows: Sequence[Tuple[str, str]]) -> Tuple[List[str], Comparisons]:
    """The reading's sentences and the ledger of their tests. ``defense_rows``: (label, run id) of the
    defence table, in order."""
    rd = Reader(s)
    out: List[str] = []
    A, V, AV = by_seed(s, "audio"), by_seed(s, "visual"), by_seed(s, "concat")
    ca, cv, cav = rd.clean_clips("audio", A), rd.clean_clips("visual", V), rd.clean_clips("concat", AV)
    ra, rv, rav = first_row(A), first_row(V), first_row(AV)
    best_uni, best_clips = ("audio", ca) if mean_acc(ra, "clean_acc") >= mean_acc(rv, "clean_acc") else ("visual", cv)
    out.append(f"Clean accuracy: audio {acc_seeds(ra, 'clean_acc')}, visual {acc_seeds(rv, 'clean_acc')}, "
               f"audio-visual (concat) {acc_seeds(rav, 'clean_acc')}. "
               + _capitalised(rd.says("clean: concat vs better unimodal", "the audio-visual model", cav,
                                      f"the better unimodal model ({best_uni})", best_clips)) + ".")
    for attack in sorted({r["attack"] for rows in AV.values() for r in rows}):
        xa, xv = find_rows(A, attack, "audio"), find_rows(V, attack, "visual")
        ya, yv, yb = (find_rows(AV, attack, p) for p in ("audio", "visual", "both"))
        if not all((xa, xv, ya, yv, yb)):
            continue
        name = attack.upper() if attack != "autoattack" else "AutoAttack"
        better = ("audio", xa) if mean_acc(xa) >= mean_acc(xv) else ("visual", xv)
        out.append(
            f"{name}: with only the audio attacked, the audio model keeps {acc_seeds(xa)} and the audio-visual model "
            f"{acc_seeds(ya)}; " + rd.says(f"{attack} audio: concat vs audio", "the audio-visual model",
                                           rd.clips("concat", ya), "the audio model", rd.clips("audio", xa))
            + f". With only the visual input attacked, the visual model keeps {acc_seeds(xv)} and the audio-visual "
            f"model {acc_seeds(yv)}; " + rd.says(f"{attack} visual: concat vs visual", "the audio-visual model",
                                                 rd.clips("concat", yv), "the visual model", rd.clips("visual", xv))
            + f". With both attacked (half the budget each) the audio-visual model keeps {acc_seeds(yb)}; "
            + rd.says(f"{attack} both: concat vs better unimodal under its attack", "it", rd.clips("concat", yb),
                      f"the better unimodal model under its own attack ({better[0]})",
                      rd.clips(better[0], better[1])) + ".")
    heads = {h: find_rows(by_seed(s, h), "pgd", "both") for h in s.fusions}
    heads = {h: r for h, r in heads.items() if r}
    if len(heads) > 1:
        best = max(heads, key=lambda h: mean_acc(heads[h]))
        worst = min(heads, key=lambda h: mean_acc(heads[h]))
        out.append("Fusion heads under PGD on both inputs: "
                   + ", ".join(f"{h} {acc_seeds(r)}" for h, r in heads.items())
                   + f". The highest is {best}: " + rd.says("fusion: most vs least robust head under PGD both", best,
                                                            rd.clips(best, heads[best]), f"the lowest ({worst})",
                                                            rd.clips(worst, heads[worst])) + ".")
    for label, rid in defense_rows:
        pgd = find_rows(by_seed(s, rid), "pgd", "both")
        robust = {k: s.results(rid, "robustness", seed=k) for k in pgd if s.has_results(rid, "robustness", seed=k)}
        rob = {k: r for k, rows in robust.items()
               for r in [next((x for x in rows if x["eps_audio"] > 0 and x["eps_visual"] > 0), None)] if r is not None}
        if not rob:
            continue
        pgd = {k: pgd[k] for k in rob}
        flags = "; ".join(dict.fromkeys(str(r.get("flags", "none")) for r in rob.values()))
        out.append(f"{label}: PGD as the paper ran it leaves {acc_seeds(pgd)} on both inputs; the per-clip worst case "
                   f"over the adaptive attacks leaves {acc_seeds(rob, 'robust_acc')}; "
                   + rd.says(f"{label}: paper PGD vs adaptive worst case", "the paper attack's accuracy",
                             rd.clips(rid, pgd), "the adaptive worst case", rd.clips(rid, rob, attack=WORST_CASE))
                   + f". Gradient-masking flags: {flags}.")
    adv, plain = find_rows(by_seed(s, "advtrain"), "pgd", "both"), find_rows(AV, "pgd", "both")
    if adv and plain:
        out.append(f"PGD adversarial training keeps {acc_seeds(adv)} under PGD on both inputs (plain concat "
                   f"{acc_seeds(plain)}); " + rd.says("advtrain vs plain concat under PGD both",
                                                      "the adversarially trained model", rd.clips("advtrain", adv),
                                                      "the plain model", rd.clips("concat", plain))
                   + f"; its clean accuracy is {acc_seeds(adv, 'clean_acc')}.")
    out.append(rd.ledger.summary())
    return out, rd.ledger


__all__ = ["PATTERNS", "SeedRows", "SeedRow", "Clips", "ReadingView", "find_row", "acc_text", "by_seed", "find_rows",
           "acc_seeds", "clips_acc", "mean_acc", "first_row", "Reader", "readings"]
