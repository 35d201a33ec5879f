"""The study's plan (pipeline/study_plan.py) and the checks of run_study.py's flags before any work: the AVE
paper plan's jobs and commands, seeds in run folders, bad inputs refused with one line and nothing written."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, List

import pytest

from dataset.specs import get_spec
from pipeline import study
from pipeline.study_plan import PAPER_FUSIONS, REPO
from utils.errors import run_cli


def _media(root: Path, categories: List[str]) -> Dict[str, Path]:
    """A media root with the two folders and three index CSVs naming ``categories`` (no media files: the plan
    and the checks read only the lists)."""
    for sub in ("audio", "frames"):
        (root / "data" / sub).mkdir(parents=True, exist_ok=True)
    lists = {}
    for split in ("train", "val", "test"):
        lists[split] = root / f"{split}.csv"
        lists[split].write_text("".join(f"/{c}/v{split}{i}.wav,/{c}/v{split}{i}.mp4,40\n"
                                        for c in categories for i in range(2)))
    return {"root": root, **lists}


def _list_flags(m: Dict[str, Path]) -> List[str]:
    return [x for s in ("train", "val", "test") for x in (f"--list_{s}", str(m[s]))]


def _dry_run(capsys, argv: List[str]) -> List[List[str]]:
    assert run_cli(study.main, argv) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    jobs = []
    for head, cmd in zip(lines[:-1:2], lines[1::2]):
        jobs.append([head.split()[0], head.split("[after")[0].split(None, 1)[1].strip(), cmd.strip()])
    return jobs, text


def test_ave_paper_plan_matches_the_paper_grid(tmp_path, capsys):
    spec = get_spec("ave")
    m = _media(tmp_path / "ave", list(spec.categories))
    out = tmp_path / "study"
    jobs, text = _dry_run(capsys, ["--dataset", "ave", "--preset", "paper", "--data_root", str(m["root"]),
                                   *_list_flags(m), "--seeds", "0", "1", "2", "--pretrained", "imagenet",
                                   "--out", str(out), "--dry_run", "--sections", "none"])  # the paper's grid alone
    assert not out.exists()  # --dry_run writes nothing
    kinds = [k for k, _, _ in jobs]
    models = ["audio", "visual", *PAPER_FUSIONS]
    # per seed: every model of the grid, MinSim, PGD adversarial training and the banks' fine-tuning
    assert kinds.count("train") == 3 * (len(models) + 3) and kinds.count("data") == 0
    # per seed: the paper's attacks on every model + MinSim + advtrain, 3 surfaces, the defended model
    assert kinds.count("eval") == 3 * (len(models) + 2 + 3 + 1) and kinds.count("report") == 1
    assert "39 train, 48 eval, 1 report" in text
    assert str(REPO) not in text  # commands relative to the repository
    for kind, name, cmd in jobs:
        if kind == "report":
            continue
        argv = shlex.split(cmd)
        flags = [a for a in argv if a.startswith("--")]
        assert len(flags) == len(set(flags)), (name, cmd)  # each flag once
        opt = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
        seed = name.split("seed")[-1]
        assert opt["--seed"] == seed and opt["--id"] == f"seed{seed}"
        assert opt["--ckpt"] == str(out / name.split()[-2])  # <out>/<model>/seed<k>
        # the paper's settings from dataset/specs.py (docs/paper.md, Model)
        assert (opt["--dataset"], opt["--arch_sound"], opt["--arch_frame"]) == ("ave", "anet", "resnet18")
        assert (opt["--audLen"], opt["--imgSize"], opt["--pretrained"]) == ("65535", "224", "imagenet")
        if kind == "train":
            assert opt["--num_epoch"] == str(spec.num_epoch)
            assert argv[argv.index("--lr_steps") + 1:argv.index("--lr_steps") + 3] == ["10", "20"]
        else:
            assert opt["--eps_unit"] == "normalized" and "--reuse_eval" in argv
    trains = {n: c for k, n, c in jobs if k == "train"}
    heads = {n.split()[1]: shlex.split(c)[shlex.split(c).index("--arch_classifier") + 1]
             for n, c in trains.items() if n.endswith("seed0")}
    assert heads == {**{m_: m_ for m_ in models}, "minsim": "concat", "advtrain": "concat", "minsim-banks": "concat"}
    assert "--minsim_weight 1" in trains["train minsim seed1"] and "--adv_train pgd" in trains["train advtrain seed2"]
    assert trains["train minsim-banks seed1"].startswith("python main_defense.py")
    assert "minsim/seed1/checkpoint_best.pth" in trains["train minsim-banks seed1"]
    evals = {n: c for k, n, c in jobs if k == "eval"}
    grid = "--eps visual=0,audio=0 visual=0,audio=0.012 visual=0.012,audio=0 visual=0.006,audio=0.006"
    for m_ in models:
        cmd = evals[f"attack {m_} seed0"]
        assert "--attack_type fgsm,pgd,mim,autoattack" in cmd and grid in cmd
        assert "--apgd_steps 100 --apgd_targets 9 --square_queries 5000" in cmd  # AutoAttack standard
    for m_ in ("audio", "visual", "concat"):
        assert "--attack_type pgd" in evals[f"surface {m_} seed2"]
    assert "--adaptive" in evals["defense attack minsim-banks seed0"].split()


def test_single_seed_keeps_todays_layout(tmp_path, capsys):
    jobs, _ = _dry_run(capsys, ["--preset", "quick", "--out", str(tmp_path / "s"), "--dry_run"])
    train = next(c for k, n, c in jobs if n == "train audio")
    assert f"--ckpt {tmp_path / 's'} --id audio" in train
    jobs, _ = _dry_run(capsys, ["--preset", "quick", "--out", str(tmp_path / "s"), "--seeds", "3", "4", "--dry_run"])
    names = [n for _, n, _ in jobs]
    assert "train audio seed3" in names and "attack concat seed4" in names and "train audio" not in names
    init = next(c for k, n, c in jobs if n == "train concat seed4")
    assert f"{tmp_path / 's'}/audio/seed4/checkpoint_best.pth" in init and "--seed 4" in init


def _refused(capsys, tmp_path, argv: List[str], *words: str) -> None:
    out = tmp_path / "study"
    code = run_cli(study.main, [*argv, "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]
    assert not out.exists()


def test_bad_inputs_exit_2_before_any_work(tmp_path, capsys):
    m = _media(tmp_path / "own", ["dog", "cat", "cow", "owl"])
    _refused(capsys, tmp_path, ["--dataset", "avee"], "--dataset", "avee", "ave")
    _refused(capsys, tmp_path, ["--dataset", "ave", "--data_root", str(tmp_path / "nowhere")],
             "--data_root", "nowhere")
    _refused(capsys, tmp_path, ["--dataset", "custom", "--categories", "dog", "cat", "cow", "--data_root",
                                str(m["root"]), *_list_flags(m), "--preset", "quick"], "owl", "train.csv")
    _refused(capsys, tmp_path, ["--dataset", "custom", "--data_root", str(m["root"]), *_list_flags(m)],
             "--categories")
    three = _media(tmp_path / "three", ["dog", "cat", "cow"])
    _refused(capsys, tmp_path, ["--dataset", "custom", "--categories", "dog", "cat", "cow", "--data_root",
                                str(three["root"]), *_list_flags(three), "--preset", "demo"],
             "--preset", "APGD-T", "4 classes", "has 3")
    _refused(capsys, tmp_path, ["--preset", "fast"], "--preset", "quick")
    _refused(capsys, tmp_path, ["--launcher", "pbs"], "--launcher", "slurm")
    _refused(capsys, tmp_path, ["--seeds", "1", "1"], "--seeds")


def test_demo_plan_runs_the_headline_on_every_seed_and_leaves_the_rest_to_full(tmp_path, capsys):
    """The demo (3 seeds): audio, visual and concat trained and attacked (FGSM + PGD on the paper grid, AutoAttack
    without FAB-T at its both-inputs point) on every seed; MinSim and MinSim + banks under PGD at that point on
    the first; the other heads, PGD-AT and the surfaces only in the full preset, whose AutoAttack keeps FAB-T."""
    def plan(preset: str):
        jobs, _ = _dry_run(capsys, ["--preset", preset, "--seeds", "0", "1", "2", "--out", str(tmp_path / preset),
                                    "--dry_run", "--sections", "none"])
        return {name: cmd for _, name, cmd in jobs}

    demo, full = plan("demo"), plan("full")
    for seed in (0, 1, 2):
        for m in ("audio", "visual", "concat"):
            assert {f"train {m} seed{seed}", f"attack {m} seed{seed}", f"autoattack {m} seed{seed}"} <= set(demo)
            aa = shlex.split(demo[f"autoattack {m} seed{seed}"])
            assert aa[aa.index("--attack_args") + 1] == "autoattack:leave_out=fab-t"
            assert aa[aa.index("--eps") + 1] == "audio=0.006,visual=0.006"
    extras = {"train minsim seed0", "train minsim-banks seed0", "defense attack minsim-banks seed0",
              "attack minsim seed0"}
    assert extras <= set(demo) and not {n for n in demo if n.endswith(("seed1", "seed2"))
                                        and n.split()[-2] not in ("audio", "visual", "concat")}
    for name in ("attack minsim seed0", "defense attack minsim-banks seed0"):  # the both-inputs point only
        cmd = shlex.split(demo[name])
        assert cmd[cmd.index("--eps") + 1:cmd.index("--eps") + 3] == ["audio=0.006,visual=0.006", "--ckpt"], name
        assert "--eps" not in full[name]
    assert not [n for n in demo if n.startswith("surface")] and "surface concat seed2" in full
    left = {f"train {m} seed0" for m in ("sum", "film_av", "gated_av", "attention", "advtrain")}
    assert not left & set(demo) and left <= set(full)
    assert "leave_out" not in full["attack concat seed1"] and "--attack_args" not in full["attack concat seed1"]
