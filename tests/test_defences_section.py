"""Study section ``defences`` (pipeline/sections/defences.py): the combined defence table and its reading from a fake
study view whose per-clip correctness is made by hand; the exact McNemar p-values below are worked out by hand
(two-sided: p = 2 * P[Binomial(b + c, 1/2) <= min(b, c)])."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from pipeline.sections.defences import CERT_RADIUS, Defences
from reporting.per_sample import row_key
from utils.rundir import RunDir, eval_file

N = 20  # clips of every hand-made evaluation
BOTH = (0.006, 0.006)  # the paper grid's both-inputs point


def right(k: int) -> Dict[int, bool]:
    """N clips, the first ``k`` right."""
    return {i: i < k for i in range(N)}


def _row(attack: str, k: int, eps=BOTH, clean: float = 0.8) -> Dict[str, Any]:
    return {"attack": attack, "eps_audio": eps[0], "eps_visual": eps[1], "clean_acc": clean, "adv_acc": k / N,
            "n_samples": N}


def _clip(pred: int, label: int, radius: float) -> Dict[str, Any]:
    return {"label": label, "prediction": pred, "radius": radius, "radii": {"audio": radius, "visual": radius}}


class View:
    """A study folder on disk (metrics, certify.json, crmt_certified.json) with results and per-clip tables in
    memory: ``evals[(run, kind)][seed] = (rows, per_sample or None)`` (kind None: the main evaluation)."""

    def __init__(self, root: Path, evals: Dict[Any, Dict[int, Any]], robustness: Dict[Any, List[Dict[str, Any]]],
                 dirs: Dict[Any, Path]) -> None:
        self.root, self.evals, self.robustness, self.dirs = root, evals, robustness, dirs

    def model_seeds(self, run: str) -> List[int]:
        seeds = {k for (r, _), by in self.evals.items() if r == run for k in by}
        return sorted(seeds | {k for (r, _, k) in self.dirs if r == run})

    def has_results(self, run: str, name: str, surface: bool = False, seed: Optional[int] = None) -> bool:
        if name == "robustness":
            return (run, seed) in self.robustness
        return seed in self.evals.get((run, None), {})

    def results(self, run: str, name: str = "results", surface: bool = False, seed: Optional[int] = None):
        if name == "robustness":
            return self.robustness[(run, seed)]
        return self.evals[(run, None)][seed][0]

    def per_sample(self, run: str, surface: bool = False, seed: Optional[int] = None):
        return self._per_sample(run, None, seed)

    def kind_results(self, run: str, kind: str, seed: Optional[int] = None, name: str = "results"):
        return self.evals.get((run, kind), {}).get(seed, ([], None))[0]

    def kind_per_sample(self, run: str, kind: str, seed: Optional[int] = None):
        return self._per_sample(run, kind, seed)

    def _per_sample(self, run: str, kind: Optional[str], seed: Optional[int]):
        table = self.evals[(run, kind)][seed][1]
        if table is None:
            raise FileNotFoundError(f"{run}/evals/x/per_sample.json")
        return table

    def kind_dir(self, run: str, kind: str, seed: Optional[int] = None) -> Optional[Path]:
        return self.dirs.get((run, kind, seed))

    def run_folder(self, run: str, seed: int) -> RunDir:
        return RunDir(self.root / run / f"seed{seed}")


def _pgd(k: int, eps=BOTH) -> Dict[Any, Dict[int, bool]]:
    return {row_key("pgd", *eps): right(k)}


def _metrics(root: Path, run: str, seeds, seconds: float) -> None:
    for k in seeds:
        (root / run / f"seed{k}").mkdir(parents=True, exist_ok=True)
        (root / run / f"seed{k}" / "metrics.jsonl").write_text(
            "".join(json.dumps({"tag": "train", "epoch": e, "seconds": seconds}) + "\n" for e in (1, 2)))


def _certify(folder: Path, clips: List[Dict[str, Any]]) -> Path:
    folder.mkdir(parents=True)
    eval_file(folder, "certify").write_text(json.dumps({
        "method": "smoothing", "params": {}, "report_radii": [0, 0.1],
        "settings": {"both": {"modalities": ["audio", "visual"], "clips": clips}}}))
    return folder


def test_the_table_and_the_reading_from_hand_made_evaluations(tmp_path):
    seeds = (0, 1)
    # PGD on both inputs: plain 2 of 20 right, PGD-AT 10, MinSim 2 (the same clips as plain), TRADES 12,
    # fast AT 15 (its per-clip file is missing), CRMT 6 in seed 0 only; MinSim + banks 9 with an adaptive row
    evals = {("concat", None): {k: ([_row("pgd", 2), _row("autoattack", 1)], _pgd(2)) for k in seeds},
             ("advtrain", None): {k: ([_row("pgd", 10, clean=0.6)], _pgd(10)) for k in seeds},
             ("minsim", None): {k: ([_row("pgd", 2)], _pgd(2)) for k in seeds},
             ("minsim-banks", None): {0: ([_row("pgd", 9)], _pgd(9))},
             ("trades", "training_defences"): {k: ([_row("pgd", 12, clean=0.55)], _pgd(12)) for k in seeds},
             ("fastat", "training_defences"): {0: ([_row("pgd", 15)], None)},
             ("crmt", "defence_heads"): {0: ([_row("pgd", 6), _row("pgd", 18, eps=(0.006, 0.0))], _pgd(6))},
             ("crmt", "defence_heads-aa"): {0: ([_row("autoattack", 4)], None)}}
    robustness = {("minsim-banks", 0): [{"eps_audio": 0.006, "eps_visual": 0.006, "robust_acc": 0.05,
                                         "n_samples": N, "flags": "none"}]}
    for run, sec in (("concat", 2.0), ("advtrain", 6.0), ("trades", 10.0), ("concat-noise", 2.0)):
        _metrics(tmp_path, run, seeds, sec)
    # smoothing, both randomised: 4 clips; certified at 0: the 2 right ones; at 0.1 only the one of radius 0.5
    # (an open ball: radius 0.05 < 0.1 does not count); a wrong and an abstaining clip never count
    clips = [_clip(1, 1, 0.5), _clip(2, 2, 0.05), _clip(0, 1, 0.9), _clip(-1, 1, 0.0)]
    dirs = {("concat", "certified", 0): _certify(tmp_path / "c0", clips),
            ("concat-noise", "certified", 0): _certify(tmp_path / "n0", clips[:2] + clips[2:3]),
            ("concat-noise", "certified", 1): _certify(tmp_path / "n1", clips[1:])}
    crmt_dir = tmp_path / "crmt0"
    crmt_dir.mkdir()
    eval_file(crmt_dir, "crmt_certified").write_text(json.dumps({"rows": [
        {"space": "input", "perturbed": "both", "estimate": True, "n": N, "r=0.1": 0.9},
        {"space": "feature", "perturbed": "both", "estimate": False, "n": N, "r=0.1": 0.3}]}))
    dirs[("crmt", "defence_heads", 0)] = crmt_dir
    blocks = Defences().report(View(tmp_path, evals, robustness, dirs))
    tables = [b.table for b in blocks if b.kind == "table"]
    got = {r["model"]: r for r in tables[0].rows}
    assert list(got) == ["none (plain concat)", "MinSim only", "MinSim + banks (paper)", "PGD adversarial training",
                         "TRADES (beta 6)", "fast AT (FGSM-RS)", "CRMT", "Gaussian noise training (smoothed)"]
    assert got["none (plain concat)"]["pgd"].startswith("10.0% (range 10.0-10.0")  # two seeds: mean and range
    assert got["none (plain concat)"]["autoattack"].startswith("5.0%")
    assert got["CRMT"]["pgd"].startswith("30.0% [")  # the both row of one seed, not the audio-only one (90%)
    assert got["CRMT"]["autoattack"].startswith("20.0% [") and got["CRMT"]["seeds"] == 1
    assert got["MinSim + banks (paper)"]["adaptive"].startswith("5.0% [")
    assert got["MinSim + banks (paper)"]["pgd"].startswith("45.0% [")
    assert got["TRADES (beta 6)"]["clean"].startswith("55.0%") and got["TRADES (beta 6)"]["pgd"].startswith("60.0%")
    # certified at 0.1: plain concat 1 of 4 clips; CRMT the feature-space row, not the input-space estimate
    assert got["none (plain concat)"]["certified"].startswith("25.0% [")
    assert got["none (plain concat)"]["certificate"].startswith("randomized smoothing")
    assert got["CRMT"]["certified"].startswith("30.0% [") and "feature space" in got["CRMT"]["certificate"]
    # the noise-trained concat: no attack evaluation; clean = the smoothed accuracy (seed 0: 2 of 3, seed 1: 1 of 3)
    noise = got["Gaussian noise training (smoothed)"]
    assert noise["clean"] == "50.0% (range 33.3-66.7: 66.7, 33.3) (smoothed)" and noise["pgd"] == "—"
    assert noise["certified"].startswith("16.7% (range 0.0-33.3")  # seed 0: 1 of 3 beyond 0.1; seed 1: none
    assert {m: r["cost"] for m, r in got.items() if r["cost"] is not None} == {
        "none (plain concat)": 1.0, "PGD adversarial training": 3.0, "TRADES (beta 6)": 5.0,
        "Gaussian noise training (smoothed)": 1.0}
    texts = [b.text for b in blocks if b.kind == "p"]
    assert "Not run in this study: memory banks only (the preset); robust fusion (--sections defence_heads)." in texts
    said = {t.split(" keeps ")[0]: t for t in texts if " keeps " in t}
    # MinSim vs plain: the same clips (0 vs 0 discordant, p = 1) in both seeds; vs PGD-AT 0 vs 8 (p = 2/2^8)
    assert "against plain concat (10.0% (range 10.0-10.0: 10.0, 10.0)): it is about the same as plain concat" \
        in said["MinSim only"]
    assert "it is lower than PGD-AT (lower in 2 of 2 seeds, each p < 0.05" in said["MinSim only"]
    assert "seed 0 0 vs 8 discordant, p = 0.0078" in said["MinSim only"]
    # TRADES vs plain: 10 vs 0 (p = 2/2^10 = 0.002) in both seeds; vs PGD-AT: 2 vs 0, p = 0.5
    assert "it is higher than plain concat (higher in 2 of 2 seeds, each p < 0.05" in said["TRADES (beta 6)"]
    assert "seed 1 10 vs 0 discordant, p = 0.002" in said["TRADES (beta 6)"]
    assert "about the same as PGD-AT (no seed's test gives p < 0.05" in said["TRADES (beta 6)"]
    # PGD-AT itself is compared with plain only: 8 vs 0 in each seed
    assert "PGD-AT (" not in said["PGD adversarial training"].split("; ", 1)[1]
    assert "higher than plain concat" in said["PGD adversarial training"]
    # one seed: the single test's words; the banks' evaluation ran on seed 0 only
    assert "it is higher than plain concat (exact McNemar on 20 paired clips: 7 vs 0 discordant, p = 0.016)" \
        in said["MinSim + banks (paper)"]
    assert "about the same as PGD-AT (exact McNemar on 20 paired clips: 0 vs 1 discordant, p = 1)" \
        in said["MinSim + banks (paper)"]
    assert said["fast AT (FGSM-RS)"].count("not tested, a per-clip file is missing (seed 0: fastat/evals/x/") == 2
    assert "CRMT keeps 30.0%" in said["CRMT"] and "4 vs 0 discordant, p = 0.12" in said["CRMT"]
    assert "Gaussian noise training (smoothed): no PGD evaluation on both inputs was recorded; not compared." in texts
    # the ledger: every test made, one row per comparison and seed
    ledger = tables[1].rows
    assert len(ledger) == 2 + 2 * 2 + 2 + 2 * 2 + 2 * 1  # PGD-AT, MinSim, banks, TRADES, CRMT
    trades = [r for r in ledger if r["comparison"] == "TRADES (beta 6) vs plain concat under PGD both"]
    assert [(r["seed"], r["a_right_b_wrong"], r["a_wrong_b_right"], r["reading"]) for r in trades] == [
        (0, 10, 0, "higher"), (1, 10, 0, "higher")]


def test_a_study_without_the_other_defences_names_them_and_drops_empty_columns(tmp_path):
    evals = {("concat", None): {0: ([_row("pgd", 2)], _pgd(2))},
             ("advtrain", None): {0: ([_row("pgd", 10, eps=(0.012, 0.012))], _pgd(10, eps=(0.012, 0.012)))}}
    blocks = Defences().report(View(tmp_path, evals, {}, {}))
    table = next(b.table for b in blocks if b.kind == "table")
    assert [r["model"] for r in table.rows] == ["none (plain concat)", "PGD adversarial training"]
    headers = [c.key for c in table.columns]
    assert headers == ["model", "seeds", "clean", "pgd"]  # no AutoAttack, adaptive, certificate or cost recorded
    texts = [b.text for b in blocks if b.kind == "p"]
    assert ("Not run in this study: MinSim only (the preset); memory banks only (the preset); MinSim + banks (paper) "
            "(the preset); TRADES (beta 6) (--sections training_defences); fast AT (FGSM-RS) (--sections "
            "training_defences); CRMT (--sections defence_heads); robust fusion (--sections defence_heads); Gaussian "
            "noise training (smoothed) (--sections certified).") in texts
    # budgets that differ are not compared, and no test is made (no ledger table)
    assert any("against plain concat: not compared (budgets differ" in t for t in texts)
    assert sum(b.kind == "table" for b in blocks) == 1
    assert CERT_RADIUS == 0.1
