"""The study sections "misalignment", "transfer" and "universal" (pipeline/sections/): the evaluations each adds
per seed (dry runs of the quick, demo and paper presets; every planned command passes main_attack's flag checks)
and the report read from a study view with hand-made rows and per-clip records (numbers checked by hand)."""
from __future__ import annotations

import shlex
from typing import Any, Dict, List, Tuple

import pytest

from pipeline.config import parse_config
from pipeline.flags import get_args_parser
from pipeline.sections.misalignment import Misalignment
from pipeline.sections.transfer import Transfer
from pipeline.sections.universal import Universal
from tests.test_study_plan import _dry_run, _list_flags, _media

CATS = ["a", "b", "c", "d", "e"]
SECTIONS = ["misalignment", "transfer", "universal"]


def _plan(tmp_path, capsys, preset: str, seeds=("0", "1"), cats=CATS) -> Dict[str, str]:
    m = _media(tmp_path / "own", cats)
    base = ["--dataset", "custom", "--categories", *cats, "--data_root", str(m["root"]), *_list_flags(m),
            "--preset", preset, "--seeds", *seeds, "--out", str(tmp_path / "s"), "--dry_run"]
    without, _ = _dry_run(capsys, [*base, "--sections", "none"])
    jobs, _ = _dry_run(capsys, [*base, "--sections", *SECTIONS])
    added = [j for j in jobs if j not in without]
    assert all(kind == "eval" for kind, _, _ in added)
    return {name: cmd for _, name, cmd in added}


def _parses(cmd: str) -> None:
    """The command's flags pass main_attack's parsing and cross-flag checks (pipeline/config.py)."""
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "main_attack.py"]
    parse_config(get_args_parser(), argv[2:])


def test_quick_plan_adds_each_sections_evaluations_and_the_flags_pass_the_checks(tmp_path, capsys):
    cmds = _plan(tmp_path, capsys, "quick")
    out = tmp_path / "s"
    mis = sorted(n for n in cmds if n.startswith("misalignment"))
    # concat in every seed, every other audio-visual head on the first seed only (not minsim/advtrain: concat variants)
    assert mis == sorted(["misalignment concat seed0", "misalignment sum seed0", "misalignment film_av seed0",
                          "misalignment gated_av seed0", "misalignment attention seed0", "misalignment concat seed1"])
    c = cmds["misalignment concat seed1"]
    assert ("--attack_type pgd,mma,desync --max_shift_s 0.1 --shift_step_s 0.05 --attack_steps 2 "
            "--eps visual=0,audio=0 visual=0,audio=0.012 visual=0.006,audio=0.006") in c
    assert "--arch_classifier concat" in c and "--seed 1" in c and f"{out}/concat --id seed1" in c
    # transfer at quick scale: the headline models only, every ordered pair, in both seeds
    tr = sorted(n for n in cmds if n.startswith("transfer"))
    pairs = [(a, b) for a in ("audio", "visual", "concat") for b in ("audio", "visual", "concat") if a != b]
    assert tr == sorted(f"transfer from {a} to {b} seed{k}" for a, b in pairs for k in (0, 1))
    t = cmds["transfer from visual to concat seed1"]
    assert (f"--arch_classifier concat --attack_type pgd --transfer_from {out}/visual/seed1 "
            "--eps visual=0.006,audio=0.006 --ckpt " f"{out}/concat --id seed1") in t
    uni = {n: c for n, c in cmds.items() if n.startswith("universal")}
    assert sorted(uni) == sorted(f"universal {m} seed{k}" for m in ("audio", "visual", "concat") for k in (0, 1))
    assert "--attack_args universal:epochs=1,fit_batch=32 --eps visual=0,audio=0.012 visual=0.006,audio=0.006 " \
           in cmds["universal audio seed0"]
    assert "--eps visual=0.012,audio=0 visual=0.006,audio=0.006 " in cmds["universal visual seed0"]
    assert "--eps visual=0,audio=0.012 visual=0.012,audio=0 visual=0.006,audio=0.006 " in cmds["universal concat seed1"]
    for name in ("misalignment concat seed1", "misalignment attention seed0", "transfer from visual to concat seed1",
                 "transfer from concat to audio seed0", "universal audio seed0", "universal concat seed1"):
        _parses(cmds[name])


def test_transfer_waits_for_the_source_and_runs_every_pair_on_the_first_seed(tmp_path):
    from pipeline import study

    m = _media(tmp_path / "own", CATS)
    args = study.get_args_parser().parse_args(
        ["--dataset", "custom", "--categories", *CATS, "--data_root", str(m["root"]), *_list_flags(m),
         "--preset", "full", "--seeds", "0", "1", "--sections", "transfer", "--out", str(tmp_path / "s"), "--dry_run"])
    jobs = {j.name: j for j in study.Study(args).jobs}  # full: every head on every seed, the matrix's first seed only
    first = [n for n in jobs if n.startswith("transfer") and n.endswith("seed0")]
    later = [n for n in jobs if n.startswith("transfer") and n.endswith("seed1")]
    assert len(first) == 7 * 6 and len(later) == 3 * 2  # audio, visual and 5 heads; then the headline models
    j = jobs["transfer from gated_av to sum seed0"]
    assert set(j.deps) == {"train sum seed0", "train gated_av seed0"} and j.eval_kind == "transfer-gated_av"
    assert j.model == "sum" and "train minsim seed0" not in {d for n in first for d in jobs[n].deps}


def test_paper_plan_matches_the_main_evaluations_units(tmp_path, capsys):
    cats = [f"c{i}" for i in range(10)]  # the paper preset's APGD-T needs 10 classes
    cmds = _plan(tmp_path, capsys, "paper", seeds=("0",), cats=cats)
    for name in ("misalignment concat", "transfer from audio to late", "universal visual"):
        assert "--eps_unit normalized" in cmds[name], name  # the paper grid's units (study_plan.paper_plan)
    assert "--attack_args universal:epochs=5,fit_batch=32" in cmds["universal visual"]
    assert "--attack_type mma,desync --max_shift_s 0.25" in cmds["misalignment late"]
    assert sum(n.startswith("transfer") for n in cmds) == 10 * 9  # audio, visual and the paper's 8 heads


# --- the report from a study view -------------------------------------------------------------------------------
N = 20  # clips per evaluation


def _row(attack: str, ea: float, ev: float, acc: float, clean: float = 0.9) -> Dict[str, Any]:
    return {"attack": attack, "eps_audio": ea, "eps_visual": ev, "clean_acc": clean, "adv_acc": acc,
            "n_samples": N}


def _correct(k: int) -> Dict[int, bool]:
    """Clips 0..k-1 right, the rest wrong (so two records pair as nested sets)."""
    return {i: i < k for i in range(N)}


class View:
    """A study view: main rows per (model, seed), section rows per (model, kind, seed), per-clip records made
    from the rows (the first round(acc * N) clips right)."""

    def __init__(self, main: Dict[Tuple[str, int], List[Dict[str, Any]]],
                 kinds: Dict[Tuple[str, str, int], List[Dict[str, Any]]], fusions=("concat",),
                 missing_per_sample: Tuple = ()) -> None:
        self.main, self.kinds, self.fusions, self.missing = main, kinds, fusions, set(missing_per_sample)

    def model_seeds(self, model: str) -> List[int]:
        return sorted({k[1] for k in self.main if k[0] == model} | {k[2] for k in self.kinds if k[0] == model})

    def results(self, model: str, name: str = "results", surface: bool = False, seed=None) -> List[Dict[str, Any]]:
        if (model, seed) not in self.main:
            raise FileNotFoundError(model)
        return self.main[(model, seed)]

    def kind_results(self, model: str, kind: str, seed=None, name: str = "results") -> List[Dict[str, Any]]:
        return self.kinds.get((model, kind, seed), [])

    @staticmethod
    def _record(rows):
        out = {}
        for r in rows:
            out[(r["attack"], float(r["eps_audio"]), float(r["eps_visual"]))] = _correct(round(r["adv_acc"] * N))
        return out

    def per_sample(self, model: str, surface: bool = False, seed=None):
        return self._record(self.results(model, seed=seed))

    def kind_per_sample(self, model: str, kind: str, seed=None):
        if (model, kind, seed) in self.missing:
            raise FileNotFoundError(f"{model} {kind} {seed}")
        return self._record(self.kind_results(model, kind, seed))


def _main(pgd_audio: float, pgd_both: float, clean: float = 0.9) -> List[Dict[str, Any]]:
    return [_row("pgd", 0, 0, clean, clean), _row("pgd", 0.012, 0, pgd_audio, clean),
            _row("pgd", 0, 0.012, 0.5, clean), _row("pgd", 0.006, 0.006, pgd_both, clean)]


def test_misalignment_report_table_and_paired_readings():
    mis = [_row("mma", 0, 0, 0.9), _row("mma", 0.012, 0, 0.3), _row("mma", 0.006, 0.006, 0.2),
           _row("desync", 0, 0, 0.4), _row("desync", 0.012, 0, 0.0), _row("desync", 0.006, 0.006, 0.05)]
    view = View({("concat", 0): _main(0.3, 0.5), ("concat", 1): _main(0.3, 0.5)},
                {("concat", "misalignment", 0): mis, ("concat", "misalignment", 1): mis})
    blocks = Misalignment().report(view)
    (table,) = [b.table for b in blocks if b.kind == "table"]
    got = {r["attack"].split(" ")[0]: (r["clean"], r["audio"], r["both"]) for r in table.rows}
    # two seeds with equal rows: the mean, range and each seed's value
    assert got["PGD"] == ("90.0% (range 90.0-90.0: 90.0, 90.0)", "30.0% (range 30.0-30.0: 30.0, 30.0)",
                          "50.0% (range 50.0-50.0: 50.0, 50.0)")
    assert got["MMA"][1].startswith("30.0%") and got["MMA"][2].startswith("20.0%") and got["MMA"][0] == "—"
    assert got["desync"][0].startswith("40.0%") and got["desync"][2].startswith("5.0%")
    reading = next(b.text for b in blocks if b.kind == "p" and "McNemar" in b.text)
    # shift alone: 8 of 20 right against 18 clean, nested: 10 vs 0 discordant, p = 2 / 2**10 = 0.002 in each seed
    assert ("Accuracy under the worst shift alone is lower than clean accuracy (lower in 2 of 2 seeds, each p < 0.05; "
            "exact McNemar per seed on 20 paired clips: seed 0 0 vs 10 discordant, p = 0.002") in reading
    # MMA on the audio: 6 and 6 of 20 right, no discordant clip: about the same
    assert "accuracy under MMA on the audio is about the same as under PGD at the same budget" in reading
    # MMA on both: 4 vs 10 right, 0 vs 6 discordant, p = 2 / 2**6 = 0.031 in each seed: lower
    assert ("accuracy under MMA on both inputs is lower than under PGD at the same budget (lower in 2 of 2 seeds, "
            "each p < 0.05; exact McNemar per seed on 20 paired clips: seed 0 0 vs 6 discordant, p = 0.031") in reading
    summary = blocks[-1].text
    assert summary.startswith("5 paired comparisons") and "(10 tests)" in summary


def test_misalignment_report_without_per_sample_or_evaluations():
    mis = [_row("mma", 0, 0, 0.9), _row("mma", 0.012, 0, 0.3), _row("mma", 0.006, 0.006, 0.2),
           _row("desync", 0, 0, 0.4), _row("desync", 0.012, 0, 0.0), _row("desync", 0.006, 0.006, 0.05)]
    view = View({("concat", 0): _main(0.3, 0.5)}, {("concat", "misalignment", 0): mis},
                missing_per_sample=[("concat", "misalignment", 0)])
    blocks = Misalignment().report(view)
    reading = next(b.text for b in blocks if b.kind == "p" and "no paired test" in b.text)
    assert reading.count("no paired test (per_sample.json missing in a seed)") == 5
    table = next(b.table for b in blocks if b.kind == "table")
    assert table.rows[0]["audio"] == "30.0% [14.5, 51.9]"  # one seed: Wilson 95% interval of 6/20
    (only,) = Misalignment().report(View({("concat", 0): _main(0.3, 0.5)}, {}))
    assert only.text.startswith("No misalignment evaluation was recorded")


def _transfer_view() -> View:
    main = {("audio", 0): _main(0.1, 0.2, 0.8), ("visual", 0): _main(0.5, 0.1, 0.7), ("concat", 0): _main(0.3, 0.05),
            ("sum", 0): _main(0.3, 0.1, 0.85), ("audio", 1): _main(0.1, 0.3, 0.8),
            ("visual", 1): _main(0.5, 0.1, 0.7), ("concat", 1): _main(0.3, 0.15)}
    acc = {  # (source, target, seed) -> accuracy of the target under PGD crafted on the source
        ("audio", "visual", 0): 0.7, ("audio", "concat", 0): 0.6, ("audio", "sum", 0): 0.6,
        ("visual", "audio", 0): 0.8, ("visual", "concat", 0): 0.7, ("visual", "sum", 0): 0.8,
        ("concat", "audio", 0): 0.5, ("concat", "visual", 0): 0.4, ("concat", "sum", 0): 0.3,
        ("sum", "audio", 0): 0.6, ("sum", "visual", 0): 0.5, ("sum", "concat", 0): 0.2,
        ("audio", "visual", 1): 0.7, ("audio", "concat", 1): 0.5, ("visual", "audio", 1): 0.8,
        ("visual", "concat", 1): 0.8, ("concat", "audio", 1): 0.4, ("concat", "visual", 1): 0.5}
    kinds = {(tgt, f"transfer-{src}", k): [_row("pgd", 0.006, 0.006, a)] for (src, tgt, k), a in acc.items()}
    return View(main, kinds, fusions=("concat", "sum"))


def test_transfer_report_matrix_and_sentence():
    blocks = Transfer().report(_transfer_view())
    table = next(b.table for b in blocks if b.kind == "table")
    m = {r["source"]: r for r in table.rows}
    assert list(m) == ["none (clean)", "audio", "visual", "concat", "sum"]
    assert m["audio"]["concat"] == "55.0% (range 50.0-60.0: 60.0, 50.0)"  # two seeds: mean, range, each in order
    assert m["sum"]["concat"] == "20.0% [8.1, 41.6]"  # first seed only: Wilson interval of 4/20
    assert m["concat"]["concat"] == "10.0% (range 5.0-15.0: 5.0, 15.0) (white-box)"  # main PGD on both, 2 seeds
    assert m["none (clean)"]["sum"] == "85.0% [64.0, 94.8]" and m["visual"]["visual"].endswith("(white-box)")
    text = blocks[-1].text
    # targets concat and sum: from another head (sum->concat 20, concat->sum 30) = 25.0 on average;
    # from unimodal (audio->concat 55, visual->concat 75, audio->sum 60, visual->sum 80) = 67.5
    assert "another fusion head leaves 25.0% accuracy on average (2 pairs)" in text
    assert "crafted on a unimodal model 67.5% (4 pairs)" in text
    assert "white-box PGD leaves 10.0%, clean 87.5%" in text  # (10 + 10) / 2 and (90 + 85) / 2
    assert "PGD transfers between fusion heads more than from the unimodal models" in text


def test_transfer_report_without_evaluations_or_a_head_pair():
    (only,) = Transfer().report(View({("concat", 0): _main(0.3, 0.5)}, {}))
    assert only.text.startswith("No transfer evaluation was recorded")
    view = _transfer_view()
    view.kinds = {k: v for k, v in view.kinds.items() if k[0] != "sum" and k[1] != "transfer-sum"}
    assert "is not compared" in Transfer().report(view)[-1].text  # concat alone: no head-to-head pair


def test_universal_report_against_per_clip_pgd():
    uni = {("audio", 0): [_row("universal", 0.012, 0, 0.6), _row("universal", 0.006, 0.006, 0.7)],
           ("concat", 0): [_row("universal", 0.012, 0, 0.3), _row("universal", 0, 0.012, 0.5),
                           _row("universal", 0.006, 0.006, 0.4)]}
    view = View({("audio", 0): _main(0.1, 0.2), ("concat", 0): _main(0.3, 0.25)},
                {(m, "universal", k): rows for (m, k), rows in uni.items()})
    blocks = Universal().report(view)
    table = next(b.table for b in blocks if b.kind == "table")
    got = [(r["model"], r["budget"], r["pgd"].split("%")[0], r["universal"].split("%")[0]) for r in table.rows]
    assert got == [("audio", "audio 0.012", "10.0", "60.0"), ("audio", "audio 0.006, visual 0.006", "20.0", "70.0"),
                   ("concat", "audio 0.012", "30.0", "30.0"), ("concat", "visual 0.012", "50.0", "50.0"),
                   ("concat", "audio 0.006, visual 0.006", "25.0", "40.0")]
    text = blocks[-1].text
    # audio 0.012: 12 vs 2 right of 20, nested: 10 vs 0 discordant, p = 0.002
    assert ("audio, audio 0.012: accuracy under the universal perturbation is higher than under per-clip PGD "
            "(exact McNemar on 20 paired clips: 10 vs 0 discordant, p = 0.002)") in text
    assert "concat, audio 0.006, visual 0.006: accuracy under the universal perturbation is about the same" in text
    assert text.endswith("by chance alone if no difference were real.")
    (only,) = Universal().report(View({("concat", 0): _main(0.3, 0.5)}, {}))
    assert only.text.startswith("No universal-perturbation evaluation was recorded")


@pytest.mark.parametrize("section", [Misalignment, Transfer, Universal])
def test_sections_run_in_the_full_preset_only_unless_asked(section):
    from pipeline.study_sections import SECTIONS, resolve

    assert SECTIONS.get(section.name) is section
    assert [p for p in ("demo", "quick", "full", "paper") if section.name in resolve(None, p)] == ["full"]
