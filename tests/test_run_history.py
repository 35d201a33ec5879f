"""Run folders under a careless or hostile user (issue 21): a kill between an epoch's metrics and its
checkpoint, a kill or a full disk before the first checkpoint, a resume with other settings, a finished run
resumed, --weights in training, out-of-range seeds and image sizes, user text in plots, and outputs that
cannot be written (disk full, read-only, a file where the folder should be).

A kill -9 is simulated in-process by raising from the checkpoint save at the right moment (the metrics rows
of that epoch are already written); tests/test_train.py kills a real process. Tests run as root in CI,
where chmod does not stop writes: a read-only folder is simulated with a monkeypatched ``os.access`` or an
errno raised by the low-level call, and a file where the folder should be is real.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

import main_attack
import pipeline.train as train_mod
from pipeline.config import add_defense_args, get_args_parser, parse_config
from tests.test_train import CATS, MEDIA, base_args  # noqa: F401  (the conftest media fixture reads CATS, MEDIA)
from utils.errors import UsageError
from utils.fileio import atomic_torch_save, atomic_write_with
from utils.rundir import RunDir

TRAIN = ("--arch_classifier", "sum", "--lr_steps", "2", "--mode", "train")


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (BaseException, so no ``except Exception`` swallows it)."""


def rows(run: Path):
    """metrics.jsonl without the wall-clock fields (time, seconds), in file order."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("time"), r.pop("seconds", None)
        out.append(r)
    return out


def kill_at_save(monkeypatch, epoch: int, name: str = "checkpoint_last.pth", exc: BaseException = Killed()):
    """Make the checkpoint save of ``name`` at ``epoch`` fail with ``exc`` (after that epoch's metrics rows)."""
    real = train_mod.atomic_torch_save

    def save(obj, path):
        if Path(path).name == name and obj.get("epoch") == epoch:
            raise exc
        return real(obj, path)

    monkeypatch.setattr(train_mod, "atomic_torch_save", save)


@pytest.fixture(scope="module")
def full(media, tmp_path_factory):  # noqa: F811
    """An uninterrupted 2-epoch run."""
    ckpt = tmp_path_factory.mktemp("full")
    assert main_attack.main(base_args(media, ckpt, "full", *TRAIN, "--num_epoch", "2")) == 0
    return ckpt / "full"


def test_resume_after_kill_between_metrics_and_checkpoint_keeps_one_history(media, full, tmp_path,  # noqa: F811
                                                                             monkeypatch):
    args = base_args(media, tmp_path, "k", *TRAIN, "--num_epoch", "2")
    kill_at_save(monkeypatch, epoch=2)  # epoch 2's train and val rows are written, its checkpoint is not
    with pytest.raises(Killed):
        main_attack.main(args)
    monkeypatch.undo()
    assert [r["step"] for r in rows(tmp_path / "k") if r["tag"] == "val"] == [1, 2]
    assert main_attack.main(args + ["--resume"]) == 0
    assert rows(tmp_path / "k") == rows(full)  # not epoch 2 twice (9 rows against 7 before the fix)
    assert len(rows(full)) == 5  # train + val per epoch, the test pass


def test_killed_first_epoch_is_refused_without_resume_and_resumes_exactly(media, full, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    args = base_args(media, tmp_path, "k1", *TRAIN, "--num_epoch", "2")
    kill_at_save(monkeypatch, epoch=1, name="checkpoint_best.pth")  # before any checkpoint exists
    with pytest.raises(Killed):
        main_attack.main(args)
    monkeypatch.undo()
    run = tmp_path / "k1"
    assert not (run / "checkpoint_last.pth").exists() and (run / "metrics.jsonl").is_file()
    before = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(UsageError, match=r"already holds a started training run.*--resume"):
        main_attack.main(args)
    assert (run / "metrics.jsonl").read_bytes() == before
    assert main_attack.main(args + ["--resume"]) == 0  # from epoch 1, as the original run started
    assert rows(run) == rows(full)


def test_disk_full_then_other_seed_is_refused_and_resume_rules(media, tmp_path, monkeypatch):  # noqa: F811

    args = base_args(media, tmp_path, "d", *TRAIN, "--num_epoch", "1")
    real = train_mod.atomic_torch_save

    def full_disk(obj, path):  # torch.save's zip writer reports the failed write as a RuntimeError
        if Path(path).name != "checkpoint_last.pth":
            return real(obj, path)

        def writer(f):
            f.write(b"PK partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return atomic_write_with(path, writer)

    monkeypatch.setattr(train_mod, "atomic_torch_save", full_disk)
    with pytest.raises(OSError, match=r"write failed.*while writing .*checkpoint_last\.pth"):  # an OutputError
        main_attack.main(args)
    monkeypatch.undo()
    run = tmp_path / "d"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no partial file left
    assert not (run / "checkpoint_last.pth").exists() and (run / "checkpoint_best.pth").is_file()
    kept = {n: (run / n).read_bytes() for n in ("args.json", "checkpoint_best.pth", "metrics.jsonl")}

    seed7 = [a if a != "3" else "7" for a in args]  # base_args ends with --seed 3
    with pytest.raises(UsageError, match="--resume"):
        main_attack.main(seed7)
    with pytest.raises(UsageError, match=r"--seed 3 -> 7.*--lr_frame 0\.0001 -> 0\.5"):
        main_attack.main(seed7 + ["--resume", "--lr_frame", "0.5"])
    assert {n: (run / n).read_bytes() for n in kept} == kept

    # extending the unfinished run and a speed flag are accepted, recorded in resumes.jsonl, args.json kept
    assert main_attack.main(args + ["--resume", "--num_epoch", "2", "--eval_batch_size", "2"]) == 0
    assert (run / "args.json").read_bytes() == kept["args.json"]
    (rec,) = [json.loads(l) for l in (run / "resumes.jsonl").read_text().splitlines()]
    assert rec["changes"] == {"--num_epoch": {"old": 1, "new": 2}, "--eval_batch_size": {"old": 0, "new": 2}}
    assert [r["step"] for r in rows(run) if r["tag"] == "val"] == [1, 2]

    # a finished run: resumed with other settings, or as it is, is refused and nothing is rewritten
    done = {n: (run / n).read_bytes() for n in ("args.json", "done_train.json", "metrics.jsonl", "resumes.jsonl")}
    hostile = ["--resume", "--lr_frame", "0.5", "--batch_size_per_gpu", "5", "--seed", "9",
               "--list_test", str(media["val"]), "--num_epoch", "5"]
    with pytest.raises(UsageError, match=r"finished run.*--seed 3 -> 9.*--batch_size_per_gpu 4 -> 5"):
        main_attack.main(args + hostile)
    with pytest.raises(UsageError, match=r"is a finished training run"):
        main_attack.main(args + ["--resume", "--num_epoch", "2"])
    assert {n: (run / n).read_bytes() for n in done} == done
    assert len([r for r in rows(run) if r["tag"] == "test"]) == 1


def test_resume_without_a_started_run_is_refused(media, tmp_path):  # noqa: F811
    with pytest.raises(UsageError, match="nothing to resume"):
        main_attack.main(base_args(media, tmp_path, "none", *TRAIN, "--num_epoch", "1", "--resume"))
    assert not (tmp_path / "none").exists()


def test_keep_metrics_through_drops_redone_epochs_and_a_cut_line(tmp_path):
    rd = RunDir(tmp_path)
    lines = [{"tag": "train", "step": 1}, {"tag": "val", "step": 1}, {"tag": "train", "step": 2},
             {"tag": "test", "step": 0}]
    rd.metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"tag": "val", "st')
    assert rd.keep_metrics_through(1) == 2
    assert [json.loads(l) for l in rd.metrics.read_text().splitlines()] == lines[:2]


def _cfg(*argv: str, defense: bool = False):
    parser = add_defense_args(get_args_parser()) if defense else get_args_parser()
    return parse_config(parser, ["--dataset", "synthetic", *argv], defense=defense)


def test_weights_in_training_is_refused_naming_resume_and_init_from():
    with pytest.raises(UsageError, match=r"--weights.*--resume.*--init_from"):
        _cfg("--mode", "train", "--weights", "ckpt.pth")
    assert _cfg("--mode", "eval", "--weights", "ckpt.pth").weights == "ckpt.pth"


@pytest.mark.parametrize("seed", ["-5", "99999999999999999999", str(2 ** 32)])
def test_seed_outside_numpys_range_is_refused(seed):
    with pytest.raises(UsageError, match=r"--seed: must be in \[0, 4294967295\]"):
        _cfg("--seed", seed)
    np.random.seed(_cfg("--seed", str(2 ** 32 - 1)).seed)  # the upper end is valid for numpy


def test_img_size_below_the_minimum_is_refused():
    with pytest.raises(UsageError, match=r"--imgSize: must be >= 2"):
        _cfg("--imgSize", "1")
    assert _cfg("--imgSize", "2").imgSize == 2


def test_resnet_forward_accepts_the_minimum_img_size():
    """MIN_IMG_SIZE is not ResNet's limit (it takes 1 px too); pins the comment in pipeline/config.py."""
    import torch

    from models.visual_net import resnet18

    net = resnet18(pretrained=None)
    for size in (1, 2):
        assert net(torch.rand(2, 3, size, size)).shape[0] == 2


def test_adaptive_eps_all_zero_is_refused_before_any_work():
    base = ["--mode", "eval", "--attack_type", "pgd", "--adaptive"]
    with pytest.raises(UsageError, match=r"--adaptive_eps: every eps is 0"):
        _cfg(*base, "--adaptive_eps", "visual=0,audio=0", defense=True)
    with pytest.raises(UsageError, match=r"--eps: every eps is 0"):
        _cfg(*base, "--eps", "visual=0,audio=0", defense=True)
    assert _cfg(*base, "--adaptive_eps", "visual=0,audio=0.006", defense=True).adaptive_grid


def test_plots_do_not_read_user_text_as_mathtext(tmp_path):
    from reporting.plots import plot_accuracy_vs_eps, plot_cosine_hist

    title = r"m$\frac$: cos"
    rng = np.random.default_rng(0)
    assert plot_cosine_hist(rng.uniform(-1, 1, 20), rng.uniform(-1, 1, 20), tmp_path / "c.png", title).is_file()
    sweep = [{"model": r"m$\frac$", "attack": "pgd", "eps_audio": e, "eps_visual": 0.0, "clean_acc": 0.9,
              "adv_acc": 0.9 - 10 * e, "eps_unit": "input"} for e in (0.0, 0.01, 0.02)]
    assert plot_accuracy_vs_eps(sweep, tmp_path / "a.png", title).is_file()


def test_torch_save_write_failure_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    import torch

    from utils.errors import OutputError

    def failing_save(obj, f):
        f.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    target = tmp_path / "checkpoint_last.pth"
    with pytest.raises(OSError, match=f"write failed.*while writing {target}"):  # an OutputError
        atomic_torch_save({"a": 1}, target)
    assert list(tmp_path.iterdir()) == []

    def enospc_inside_torch(obj, f):  # the OSError torch's writer hit, kept as the RuntimeError's context
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", enospc_inside_torch)
    with pytest.raises(OutputError, match=f"^no space left on device while writing {target}$") as e:
        atomic_torch_save({"a": 1}, target)
    assert e.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("err, reason", [(errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied")])
def test_unwritable_folder_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys, err, reason):
    import tempfile

    from utils.errors import run_cli

    def refuse(*a, **k):
        raise OSError(err, "refused")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = tmp_path / "out" / "report.md"
    assert run_cli(lambda argv: bool(atomic_write_with(target, lambda f: None))) == 2
    assert capsys.readouterr().err == f"error: {reason} while writing {target}\n"


def test_unwritable_ckpt_is_refused_before_any_work(media, tmp_path, monkeypatch, capsys):  # noqa: F811
    import os

    from utils.errors import run_cli

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = base_args(media, blocker, "r", *TRAIN, "--num_epoch", "1")
    assert run_cli(main_attack.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --ckpt: cannot create the run folder") and "is a file" in err[0]

    real_access = os.access
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real_access(p, mode, **k))
    args = base_args(media, ro, "r", *TRAIN, "--num_epoch", "1")
    assert run_cli(main_attack.main, args) == 2
    assert "not writable" in capsys.readouterr().err
    assert list(ro.iterdir()) == []


def test_unwritable_study_out_is_one_line_before_any_step(tmp_path, capsys):
    from pipeline.study import main as study_main
    from utils.errors import run_cli

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert run_cli(study_main, ["--quick", "--out", str(blocker / "study"), "--media", str(tmp_path / "m"),
                                "--index", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --out: cannot create the study folder") and "is a file" in err[-1]
    assert not (tmp_path / "m").exists()


def test_a_failing_plot_keeps_the_evaluation(media, full, monkeypatch):  # noqa: F811
    import pipeline.attack_eval as attack_eval

    def broken(*a, **k):
        raise ValueError("a plot that cannot be drawn")

    monkeypatch.setattr(attack_eval, "plot_cosine_hist", broken)
    args = base_args(media, full.parent, "full", "--arch_classifier", "sum", "--mode", "eval", "--attack_type",
                     "fgsm", "--eps", "visual=0.01,audio=0.01", "--max_eval_batches", "1")
    assert main_attack.main(args) == 0
    ev = RunDir(full).latest_eval()
    assert ev is not None and (ev / "results.json").is_file() and not (ev / "cosine_hist.png").exists()
    assert json.loads((ev / "eval.json").read_text())["plot_errors"] == [
        "cosine_hist.png not drawn: ValueError: a plot that cannot be drawn"]
