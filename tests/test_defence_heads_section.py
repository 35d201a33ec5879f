"""Study section ``defence_heads`` (pipeline/sections/defence_heads.py): the planned commands (dry run), the report
from a fake view with hand-checked numbers, and the CRMT bound an evaluation of a crmt head writes
(pipeline/crmt_eval.py) on a tiny trained run."""
from __future__ import annotations

import json
from types import SimpleNamespace

import main_attack
from pipeline.crmt_eval import RADII
from pipeline.sections.defence_heads import DefenceHeads
from tests.conftest import run_argv
from utils.rundir import RunDir, eval_file

CATS = ["alpha", "beta", "gamma"]
MEDIA = dict(clips_per_class=3, num_frames=2, seconds=1.0, img_hw=(24, 24), seed=0)


def test_the_heads_train_as_concat_and_are_evaluated_as_pgd_at(tmp_path, capsys):
    from tests.test_study_plan import _dry_run, _list_flags, _media

    m = _media(tmp_path / "own", ["a", "b", "c", "d", "e"])
    out = tmp_path / "s"
    base = ["--dataset", "custom", "--categories", "a", "b", "c", "d", "e", "--data_root", str(m["root"]),
            *_list_flags(m), "--preset", "quick", "--seeds", "0", "1", "--out", str(out), "--dry_run"]
    jobs, _ = _dry_run(capsys, [*base, "--sections", "defence_heads"])
    cmds = {name: cmd for _, name, cmd in jobs}
    for seed in (0, 1):
        plain = cmds[f"train concat seed{seed}"].replace(" --save_features", "")
        where = f" --ckpt {out / 'concat'} --id seed{seed} --mode train"
        for model, own in (("crmt", "--arch_classifier crmt --crmt_step2_epochs 1"),
                           ("robust", "--arch_classifier robust_fusion --train_attack_steps 3")):
            expected = plain.replace(" --arch_classifier concat", "").replace(
                where, f" {own} --ckpt {out / model} --id seed{seed} --mode train")
            assert cmds[f"train {model} seed{seed}"] == expected
            arch = own.split()[1]
            for verb in ("attack", "autoattack"):
                at = cmds[f"{verb} advtrain seed{seed}"]
                assert cmds[f"{verb} {model} seed{seed}"] == at.replace(
                    "--arch_classifier concat", f"--arch_classifier {arch}").replace(
                    f"{out / 'advtrain'} --id", f"{out / model} --id")


def _row(attack, acc, n=100, both=True):
    return {"attack": attack, "eps_audio": 0.006, "eps_visual": 0.006 if both else 0.0, "norm_audio": "Linf",
            "norm_visual": "Linf", "clean_acc": 0.8, "adv_acc": acc, "n_samples": n}


def test_the_report_gives_the_defence_table_and_crmt_certified_accuracy(tmp_path):
    secs = {"concat": [2.0, 2.0], "advtrain": [6.0, 6.0], "crmt": [3.0, 5.0], "robust": [8.0, 8.0]}
    for run, values in secs.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.jsonl").write_text("".join(
            json.dumps({"tag": "train", "epoch": e + 1, "seconds": v}) + "\n" for e, v in enumerate(values)))
    crmt_eval = tmp_path / "crmt" / "evals" / "x"
    crmt_eval.mkdir(parents=True)
    rows = [{"space": "feature", "perturbed": "both", "estimate": False, "n": 100, "r=0": 0.7, "r=0.1": 0.5,
             "r=0.5": 0.1},
            {"space": "input", "perturbed": "audio", "estimate": True, "n": 100, "r=0": 0.7, "r=0.1": 0.6,
             "r=0.5": 0.4}]
    eval_file(crmt_eval, "crmt_certified").write_text(json.dumps({"rows": rows}))
    kind = {("crmt", "defence_heads"): [_row("pgd", 0.25), _row("pgd", 0.9, both=False)],
            ("crmt", "defence_heads-aa"): [_row("autoattack", 0.2)],
            ("robust", "defence_heads"): [_row("pgd", 0.3)], ("robust", "defence_heads-aa"): []}
    view = SimpleNamespace(
        model_seeds=lambda run: [0],
        results=lambda run, seed=None: [_row("pgd", 0.1 if run == "concat" else 0.4), _row("autoattack", 0.05)],
        kind_results=lambda run, k, seed=None: kind.get((run, k), []),
        kind_dir=lambda run, k, seed=None: crmt_eval if (run, k) == ("crmt", "defence_heads") else None,
        run_folder=lambda run, seed: RunDir(tmp_path / run))
    blocks = DefenceHeads().report(view)
    defence, cert = [b.table for b in blocks if b.kind == "table"]
    got = {r["model"]: r for r in defence.rows}
    assert list(got) == ["plain (concat)", "PGD adversarial training", "CRMT (rho 2, one step-two epoch)",
                         "robust fusion (single-source training)"]
    assert got["plain (concat)"]["pgd"].startswith("10.0%") and got["PGD adversarial training"]["pgd"].startswith("40.0%")
    crmt = got["CRMT (rho 2, one step-two epoch)"]
    assert crmt["clean"].startswith("80.0%") and crmt["pgd"].startswith("25.0%")  # the both row, not audio-only
    assert crmt["autoattack"].startswith("20.0%") and crmt["certified"].startswith("70.0%")
    robust = got["robust fusion (single-source training)"]
    assert robust["autoattack"] == "—" and robust["certified"] == "not certifiable"
    assert {m: r["cost"] for m, r in got.items()} == {
        "plain (concat)": 1.0, "PGD adversarial training": 3.0, "CRMT (rho 2, one step-two epoch)": 2.0,
        "robust fusion (single-source training)": 4.0}
    assert [(r["space"], r["perturbed"], r["r=0.1"]) for r in cert.rows] == [
        ("feature", "both", 0.5), ("input (ESTIMATE)", "audio", 0.6)]


def test_an_evaluation_of_a_crmt_head_writes_its_bound(media, tmp_path):
    kw = dict(cats=CATS, imgSize=16, batch_size_per_gpu=6, seed=1, arch_sound="anet_lite", arch_frame="resnet10",
              audLen=4096)
    assert main_attack.main(run_argv(media, tmp_path, "crmt", "--mode", "train", "--arch_classifier", "crmt",
                                     "--crmt_step2_epochs", "1", num_epoch=1, **kw)) == 0
    assert main_attack.main(run_argv(media, tmp_path, "crmt", "--mode", "eval", "--arch_classifier", "crmt",
                                     lists=("test",), **kw)) == 0
    folder = RunDir(tmp_path / "crmt").latest_eval()
    rec = json.loads(eval_file(folder, "crmt_certified").read_text())
    clean = json.loads(eval_file(folder, "config").read_text())["clean"]
    assert [(r["space"], r["perturbed"]) for r in rec["rows"]] == [
        (s, p) for s in ("feature", "input") for p in ("audio", "visual", "both")]  # step two recorded tau
    for row in rec["rows"]:
        radii = rec["clips"][f"{row['space']}/{row['perturbed']}"]
        assert row["n"] == len(radii) == len(rec["clips"]["ids"]) == clean["n"]
        assert row["estimate"] == (row["space"] == "input")
        for r in RADII:  # counted by hand from the per-clip bounds
            assert row[f"r={r:g}"] == sum(x > r for x in radii) / len(radii)
        assert row["r=0"] <= clean["acc"] + 1e-9  # a positive bound only for a correctly classified clip
    # the same margin over a larger denominator: the same sign, and a positive joint bound is never above either
    # single-modality one
    for a, v, b in zip(*(rec["clips"][f"feature/{p}"] for p in ("audio", "visual", "both"))):
        assert (a > 0) == (v > 0) == (b > 0)
        assert b <= min(a, v) + 1e-9 or b < 0
    # any other head writes nothing of the kind
    assert main_attack.main(run_argv(media, tmp_path, "cc", "--mode", "train", "--arch_classifier", "concat",
                                     num_epoch=1, **kw)) == 0
    assert main_attack.main(run_argv(media, tmp_path, "cc", "--mode", "eval", "--arch_classifier", "concat",
                                     lists=("test",), **kw)) == 0
    assert not eval_file(RunDir(tmp_path / "cc").latest_eval(), "crmt_certified").exists()
