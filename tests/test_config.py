"""Every flag, list and checkpoint is checked before work, and a run folder never contradicts itself.

Each bad input exits 2 with one line naming the flag, file or row, before any training step, clean pass or
attack; a refused run leaves the folder byte-identical; a killed evaluation leaves no folder claiming to
be its output.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
import torch

import main_attack
import main_defense
from pipeline import config as config_mod
from pipeline.config import RunConfig, add_defense_args, get_args_parser, parse_attack_names
from tests.conftest import run_argv
from utils.errors import run_cli
from utils.fileio import atomic_write_bytes, atomic_write_with
from utils.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
CATS = ["alpha", "beta", "gamma"]


MEDIA = dict(clips_per_class=4, num_frames=6, seconds=1.0, img_hw=(32, 32), seed=1)  # the `media` fixture's


def argv(media, ckpt: Path, run_id: str, *extra: str, lists=("train", "val", "test")):
    return run_argv(media, ckpt, run_id, *extra, cats=CATS, lists=lists, imgSize=16, arch_frame="resnet10",
                    batch_size_per_gpu=3)


def snapshot(folder: Path) -> Dict[str, str]:
    """Every file under ``folder`` with its content hash (byte-identity of a run folder)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(main, args, capsys):
    """Run an entry point as the command line does; return (exit code, stderr lines)."""
    code = run_cli(main, args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


@pytest.fixture(scope="module")
def trained(media, tmp_path_factory):
    """One trained concat run (1 epoch) shared by the checks that need a checkpoint."""
    ckpt = tmp_path_factory.mktemp("runs")
    assert main_attack.main(argv(media, ckpt, "base", "--num_epoch", "1", "--lr_steps", "5", "--save_features",
                                 "--mode", "train")) == 0
    return ckpt


# ------------------------------------------------------------------------------------------------------------
# bad flags: one line, exit 2, nothing written

@pytest.mark.parametrize("extra,needle", [
    (["--lr_frame", "-1"], "--lr_frame"),
    (["--lr_sound", "nan"], "--lr_sound"),
    (["--weight_decay", "-0.1"], "--weight_decay"),
    (["--save_examples", "-5"], "--save_examples"),
    (["--eps", "visual=0.01"], "--eps"),  # training ignores eps: refused
    (["--mode", "eval", "--eps", "visual=0,audio=0.01"], "needs --attack_type"),
    (["--mode", "eval", "--attack_type", "pgd", "--eps", "visual=abc"], "--eps"),
    (["--mode", "eval", "--attack_type", "pgdd"], "--attack_type"),
    (["--mode", "eval", "--attack_type", "pgd", "--sweep_eps", "-1"], "--sweep_eps"),
    (["--cls_num", "7"], "--cls_num"),
    (["--categories", "alpha,alpha,beta"], "--categories"),
    (["--mode", "eval", "--attack_type", "autoattack", "--apgd_targets", "0"], "--apgd_targets"),
    (["--apgd_targets", "2"], "--apgd_targets"),  # training ignores it: refused
    (["--mode", "eval", "--attack_type", "pgd", "--eot", "0"], "--eot"),
    (["--eot", "20"], "--eot"),  # training ignores it: refused
])
def test_bad_flags_exit_2_with_one_line_before_any_work(media, tmp_path, capsys, extra, needle):
    code, err = cli(main_attack.main, argv(media, tmp_path, "r", *extra), capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_eot_on_a_deterministic_model_exits_2_before_the_attacks(media, trained, capsys, monkeypatch):
    import pipeline.drivers as drivers
    cleaned = []
    monkeypatch.setattr(drivers, "clean_accuracy", lambda *a, **k: cleaned.append(1))  # must not be reached
    evals = trained / "base" / "evals"
    before = sorted(p.name for p in evals.iterdir()) if evals.exists() else []
    args = argv(media, trained, "base", "--mode", "eval", "--attack_type", "pgd", "--eot", "4")
    code, err = cli(main_attack.main, args, capsys)
    err = [line for line in err if line.startswith("error:")]  # set-up logs its INFO lines before the check
    assert code == 2 and len(err) == 1 and "--eot" in err[0] and "deterministic" in err[0], err
    assert not cleaned  # refused before the clean pass and the grid
    assert (sorted(p.name for p in evals.iterdir()) if evals.exists() else []) == before  # nothing published


def test_bad_adaptive_eps_is_refused_before_the_grid(media, trained, capsys):
    args = argv(media, trained, "def", "--base_weights", str(RunDir(trained / "base").checkpoint_best),
                "--features", str(RunDir(trained / "base").features), "--mode", "eval", "--attack_type", "pgd",
                "--adaptive", "--adaptive_eps", "audio=x")
    code, err = cli(main_defense.main, args, capsys)
    assert code == 2 and len(err) == 1 and "--adaptive_eps" in err[0]
    assert not (trained / "def").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--adaptive", "--adaptive_attacks", "pgd,bogus"], "--adaptive_attacks"),
    (["--adaptive", "--adaptive_attacks", "square,square"], "--adaptive_attacks"),
    (["--adaptive", "--adaptive_attacks", "apgd-t:sideways"], "--adaptive_attacks"),
    (["--adaptive_attacks", "square"], "needs --adaptive"),  # would be silently ignored without --adaptive
    (["--adaptive_eps", "audio=0.006,visual=0"], "needs --adaptive"),
    (["--adaptive", "--adaptive_attacks", "apgd-t:unrolled"], "needs at least 4 classes"),  # 3 classes here
])
def test_adaptive_options_are_checked_before_work(media, trained, capsys, extra, needle):
    args = argv(media, trained, "def", "--base_weights", str(RunDir(trained / "base").checkpoint_best),
                "--features", str(RunDir(trained / "base").features), "--mode", "eval", "--attack_type", "pgd",
                *extra)
    code, err = cli(main_defense.main, args, capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (trained / "def").exists()


def test_adaptive_attacks_subset_runs_only_those_and_says_so(media, trained):
    base = RunDir(trained / "base")
    args = argv(media, trained, "def-subset", "--base_weights", str(base.checkpoint_best), "--features",
                str(base.features), "--mode", "eval", "--attack_type", "pgd", "--eps", "audio=0,visual=0",
                "audio=0.006,visual=0.006", "--attack_steps", "1", "--bank_size", "8", "--ista_iters", "20",
                "--unrolled_iters", "3", "--adaptive", "--adaptive_attacks", "fgsm,apgd-ce:bpda,square",
                "--square_queries", "3", "--apgd_steps", "2", "--apgd_targets", "1")
    assert main_defense.main(args) == 0
    ev = RunDir(trained / "def-subset").latest_eval()
    configs = [r["config"] for r in json.loads((ev / "adaptive_results.json").read_text())]
    assert configs == ["paper: pgd (unrolled)", "fgsm (bpda)", "apgd-ce (bpda)", "square (black box)"], configs
    (summary,) = json.loads((ev / "robustness.json").read_text())
    assert summary["attacks"] == "paper pgd, fgsm, apgd-ce:bpda, square"
    assert sorted(k for k in summary if k.startswith("acc[")) == [
        "acc[apgd-ce (bpda)]", "acc[fgsm (bpda)]", "acc[paper: pgd (unrolled)]", "acc[square (black box)]"]
    # the sparse coder's rows left uncertified at the cap (--ista_iters) are recorded (issue 17)
    solver = json.loads((ev / "eval.json").read_text())["solver"]
    assert solver["solver_max_iter"] == 20 and set(solver["solver_rows"]) == {"audio", "visual"}
    assert all(0 <= solver["solver_uncertified_rows"][m] <= solver["solver_rows"][m] for m in ("audio", "visual"))
    assert 0 < summary["solver_rows"] and 0 <= summary["solver_uncertified_rows"] <= summary["solver_rows"]


def test_apgd_targets_reach_apgd_t_and_autoattack():
    from attacks import create_attack
    from models import create_model
    from pipeline.attack_eval import common_attack_options

    cfg = config_mod.parse_config(get_args_parser(), ["--list_test", "t.csv", "--mode", "eval", "--attack_type",
                                                      "autoattack,apgd-t", "--apgd_targets", "2"])
    options = common_attack_options(cfg)["attack_options"]
    model = create_model("anet", "resnet10", "concat", num_classes=4).eval()
    eps = {"audio": 0.01, "visual": 0.01}
    aa = create_attack("autoattack", model, eps=eps, **options["autoattack"])
    apgdt = create_attack("apgd-t", model, eps=eps, **options["apgd-t"])
    assert aa.stages[1].n_target_classes == 2 and apgdt.n_target_classes == 2


def test_permuted_categories_are_refused(media, trained, capsys):
    perm = ["beta", "alpha", "gamma"]
    args = argv(media, trained, "base", "--mode", "eval", "--attack_type", "fgsm")
    args[args.index("--categories") + 1] = ",".join(perm)
    before = snapshot(trained / "base")
    code, err = cli(main_attack.main, args, capsys)
    assert code == 2 and len(err) == 1 and "another order" in err[0] and "alpha,beta,gamma" in err[0]
    assert snapshot(trained / "base") == before


def test_refused_second_training_run_leaves_the_folder_byte_identical(media, trained, capsys):
    before = snapshot(trained / "base")
    code, err = cli(main_attack.main, argv(media, trained, "base", "--num_epoch", "1", "--mode", "train"), capsys)
    assert code == 2 and len(err) == 1 and "--resume" in err[0]
    assert snapshot(trained / "base") == before


def test_resume_with_another_schedule_is_refused(media, trained, capsys):
    code, err = cli(main_attack.main, argv(media, trained, "base", "--num_epoch", "2", "--lr_steps", "1",
                                           "--resume", "--mode", "train"), capsys)
    assert code == 2 and "--lr_steps" in err[0] and "5" in err[0]


def test_init_from_a_csv_says_what_it_is(media, tmp_path, capsys):
    code, err = cli(main_attack.main, argv(media, tmp_path, "r", "--init_from", str(media["train"])), capsys)
    assert code == 2 and len(err) == 1 and "--init_from" in err[0] and "not a checkpoint" in err[0]
    assert "weights_only=False" not in err[0]


def test_bank_folder_typo_names_the_path(media, trained, capsys):
    args = argv(media, trained, "def", "--base_weights", str(RunDir(trained / "base").checkpoint_best),
                "--bank", str(trained / "no-such-run"), "--mode", "eval")
    code, err = cli(main_defense.main, args, capsys)
    assert code == 2 and len(err) == 1 and "--bank" in err[0] and "no-such-run" in err[0]


def test_short_clip_is_found_before_training(media, tmp_path, capsys):
    short = tmp_path / "short.csv"
    rows = media["train"].read_text().splitlines()
    rows[2] = rows[2].rsplit(",", 1)[0] + ",2"  # a clip with 2 frames
    short.write_text("\n".join(rows) + "\n")
    args = argv(media, tmp_path, "r", "--num_frames", "3", "--stride_frames", "2", lists=("val", "test"))
    args += ["--list_train", str(short)]
    code, err = cli(main_attack.main, args, capsys)
    assert code == 2 and len(err) == 1 and str(short) in err[0] and "row 3" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [b"/alpha/caf\xe9.wav,/alpha/caf\xe9.mp4,6\n", b"\x89PNG\r\n\x1a\n\x00\x00",
                                     "/alpha/v.wav,/alpha/v.mp4,\u00b2\n".encode()])
def test_malformed_index_exits_2_naming_the_file(media, tmp_path, capsys, content):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    args = argv(media, tmp_path, "r", lists=("train", "test")) + ["--list_val", str(bad)]
    code, err = cli(main_attack.main, args, capsys)
    assert code == 2 and len(err) == 1 and str(bad) in err[0] and "row 1" in err[0]


# ------------------------------------------------------------------------------------------------------------
# list defaults (the reference's meaning)

def test_lists_never_come_from_another_dataset_and_eval_reads_list_val(media, tmp_path, caplog):
    args = argv(media, tmp_path, "r", "--num_epoch", "1", lists=("train", "val"))
    cfg = config_mod.parse_config(get_args_parser(), args + ["--mode", "train"])
    assert cfg.list_test == "" and "synthetic" not in cfg.list_val
    with caplog.at_level("INFO"):
        assert main_attack.main(args + ["--mode", "train"]) == 0
    assert "no --list_test" in caplog.text
    assert not [l for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"tag": "test"' in l]
    assert main_attack.main(argv(media, tmp_path, "r", "--mode", "eval", lists=("train", "val"))) == 0
    record = json.loads((RunDir(tmp_path / "r").latest_eval() / "eval.json").read_text())
    assert record["list"] == str(media["val"]) and record["clean"]["list"] == str(media["val"])


def _own_dataset_argv(media, ckpt: Path, run_id: str, *extra: str) -> list:
    """argv() without --dataset: the classes alpha/beta/gamma are in no spec (a dataset of the user's own)."""
    out = argv(media, ckpt, run_id, *extra)
    i = out.index("--dataset")
    return out[:i] + out[i + 2:]


def test_a_dataset_of_your_own_takes_the_papers_defaults_not_the_demos(media, tmp_path):
    from dataset.specs import get_spec

    bare = [a for a in _own_dataset_argv(media, tmp_path, "own", "--mode", "train")
            if a not in ("--audLen", "4096", "--imgSize", "16")]
    cfg = config_mod.parse_config(get_args_parser(), bare)
    synthetic = get_spec("synthetic")
    # the paper's generic settings (docs/paper.md, Model), never the embedded set's CPU values
    assert cfg.dataset == "custom" and list(cfg.categories) == CATS
    assert (cfg.audLen, cfg.imgSize, cfg.num_epoch, cfg.lr_steps) == (65535, 224, 30, (10, 20))
    assert (cfg.audLen, cfg.imgSize, cfg.num_epoch) != (synthetic.audio_len, synthetic.img_size, synthetic.num_epoch)
    defense = config_mod.parse_config(add_defense_args(get_args_parser()), bare, defense=True)
    assert (defense.mix, defense.alpha_a, defense.alpha_v) == (0.5, 7e-7, 2e-6)
    # the run records the user's dataset with its classes (a training run of 1 epoch at small sizes)
    assert main_attack.main(_own_dataset_argv(media, tmp_path, "own", "--mode", "train", "--num_epoch", "1")) == 0
    args = json.loads(RunDir(tmp_path / "own").args.read_text())
    assert args["dataset"] == "custom" and args["categories"] == CATS and args["lr_steps"] == [10, 20]


@pytest.mark.parametrize("drop,extra,needle", [
    ((), ["--dataset", "custom"], "--categories"),  # no classes: refused, never another spec's
    (("--list_train", "--list_val", "--list_test"), [], "--list_train"),  # no shipped lists
    (("--audio_path", "--frame_path"), [], "--audio_path"),  # no default media root
])
def test_a_dataset_of_your_own_needs_its_classes_lists_and_media(media, tmp_path, capsys, monkeypatch, drop, extra,
                                                                  needle):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    args = _own_dataset_argv(media, tmp_path, "own", "--mode", "train")
    for flag in drop:
        i = args.index(flag)
        args = args[:i] + args[i + 2:]
    if "--dataset" in extra:
        i = args.index("--categories")
        args = args[:i] + args[i + 2:]
    code, err = cli(main_attack.main, args + extra, capsys)
    assert code == 2 and len(err) == 1 and needle in err[0] and "custom" in err[0], err
    assert not (tmp_path / "own").exists()


# ------------------------------------------------------------------------------------------------------------
# evaluations: one folder each, with their configuration; a killed one leaves nothing claiming to be output

def test_each_eval_keeps_its_own_folder_and_configuration(media, trained):
    base = argv(media, trained, "base", "--mode", "eval", "--attack_type", "fgsm")
    assert main_attack.main(base + ["--eps", "visual=0,audio=0.01"]) == 0
    assert main_attack.main(base + ["--eps", "visual=0.01,audio=0"]) == 0
    rd = RunDir(trained / "base")
    first, second = (rd.eval_dir(i) for i in rd.eval_ids()[-2:])
    for folder, eps in ((first, 0.0), (second, 0.01)):
        rec = json.loads((folder / "eval.json").read_text())
        assert rec["config"]["attacks"] == ["fgsm"] and rec["checkpoint_sha256"]
        assert json.loads((folder / "results.json").read_text())[0]["eps_visual"] == eps
    # files follow the process umask (not mkstemp's 0600)
    mask = os.umask(0)
    os.umask(mask)
    assert (second / "results.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_killed_eval_leaves_no_output_folder(media, trained, monkeypatch):
    rd = RunDir(trained / "base")
    before = rd.eval_ids()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    args = argv(media, trained, "base", "--mode", "eval", "--attack_type", "pgd", "--attack_steps", "200",
                "--eps", "visual=0.01,audio=0.01")
    proc = subprocess.Popen([sys.executable, str(REPO / "main_attack.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if rd.evals.is_dir() and any(p.name.endswith(".partial") for p in rd.evals.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(1.0)  # inside the clean pass or the attack grid
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert rd.eval_ids() == before
    assert sorted(p for p in os.listdir(rd.evals) if not p.startswith(".")) == before  # only a hidden staging dir
    # a failed (not killed) eval removes its staging folder
    import pipeline.drivers

    def broken(*a, **k):
        raise RuntimeError("attack grid failed")

    monkeypatch.setattr(pipeline.drivers, "run_attack_eval", broken)
    staged = {p for p in os.listdir(rd.evals)}
    with pytest.raises(RuntimeError, match="attack grid failed"):
        main_attack.main(argv(media, trained, "base", "--mode", "eval", "--attack_type", "pgd"))
    assert rd.eval_ids() == before and set(os.listdir(rd.evals)) == staged


def test_examples_need_an_attacked_row(media, trained, capsys):
    args = argv(media, trained, "base", "--mode", "eval", "--attack_type", "pgd", "--save_examples", "2",
                "--eps", "visual=0,audio=0")
    code, err = cli(main_attack.main, args, capsys)
    assert code == 2 and "--save_examples" in err[0]


# ------------------------------------------------------------------------------------------------------------
# the config object, the registries, atomic writes

def test_run_config_is_frozen_and_has_a_field_per_flag():
    for parser in (get_args_parser(), add_defense_args(get_args_parser())):
        dests = {a.dest for a in parser._actions if a.dest != "help"}
        fields = set(RunConfig.__dataclass_fields__)
        assert dests <= fields, dests - fields
    cfg = config_mod.parse_config(get_args_parser(), ["--list_train", "a", "--list_val", "b"])
    with pytest.raises(Exception):
        cfg.lr_frame = 1.0  # type: ignore[misc]


def test_attack_type_all_means_every_registered_attack():
    from attacks.base import ATTACKS
    from attacks.pgd import PGD

    @ATTACKS.register("zz_test_attack")
    class _Extra(PGD):
        pass

    try:
        assert "zz_test_attack" in parse_attack_names("all")
        # 'all' is every registered attack but those marked in_all = False (autoattack: an ensemble of the others;
        # the temporal PGD variants)
        assert set(parse_attack_names("all")) == {n for n in ATTACKS.names() if ATTACKS.get(n).in_all}
        assert "autoattack" not in parse_attack_names("all")
        assert "autoattack" in parse_attack_names("pgd,autoattack")
    finally:
        ATTACKS._items.pop("zz_test_attack")


def test_parser_choices_come_from_the_registries():
    from models import list_fusions

    parser = get_args_parser()
    action = next(a for a in parser._actions if a.dest == "arch_classifier")
    assert list(action.choices) == list_fusions()


def test_atomic_write_removes_temp_and_names_path_on_enospc(tmp_path):
    target = tmp_path / "ck.pth"

    def full_disk(f):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=str(target)):
        atomic_write_with(target, full_disk)
    assert list(tmp_path.iterdir()) == []
    atomic_write_bytes(target, b"ok")
    assert target.read_bytes() == b"ok" and list(tmp_path.iterdir()) == [target]


def test_checkpoint_records_categories_in_order(trained):
    ck = torch.load(RunDir(trained / "base").checkpoint_best, weights_only=True)
    assert ck["categories"] == CATS and ck["scheduler"]["lr_steps"] == [5]


def test_audio_window_too_short_for_the_net_is_refused(media, tmp_path, capsys):
    args = argv(media, tmp_path, "r")
    args[args.index("--audLen") + 1] = "2048"
    code, err = cli(main_attack.main, args, capsys)
    assert code == 2 and len(err) == 1 and "--audLen" in err[0] and "2341" in err[0]
    assert not (tmp_path / "r").exists()


def test_a_last_training_batch_of_one_clip_is_refused(media, tmp_path, capsys):
    args = argv(media, tmp_path, "r")  # 9 training clips
    args[args.index("--batch_size_per_gpu") + 1] = "4"
    code, err = cli(main_attack.main, args, capsys)
    assert code == 2 and len(err) == 1 and "--batch_size_per_gpu" in err[0]
