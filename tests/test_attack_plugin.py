"""An attack with an option added in one file of the user's own, through the command line: --plugins loads
it, --attack_type names it, --attack_args sets its constructor argument (checked against the signature:
an unknown key or a wrong type exits 2 naming the attack's arguments, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import main_attack
from attacks import ATTACKS
from tests.fake_media import make_fake_media
from utils.errors import run_cli

CATS = ["alpha", "beta", "gamma"]
PLUGIN = '''
from typing import Mapping
from torch import nn
from attacks.base import ATTACKS, Attack


@ATTACKS.register("test_plugin_fraction")
class FractionFGSM(Attack):
    """One signed-gradient step of size fraction * eps."""

    def __init__(self, model: nn.Module, eps: Mapping[str, float], fraction: float = 1.0,
                 norm: str = "Linf") -> None:
        super().__init__(model, eps, alpha={m: fraction * e for m, e in eps.items()}, norm=norm)

    def _perturb(self, clean, start, fixed, labels, threats):
        grads = self._input_grads(start, fixed, labels)
        return {m: threats[m].clip(threats[m].step(start[m], grads[m]), threats[m].box(clean[m])) for m in start}
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plugin file and a tiny model trained for one epoch on fake media."""
    root = tmp_path_factory.mktemp("attack_plugin")
    media = make_fake_media(root / "media", CATS, clips_per_class=3, num_frames=2, seconds=0.5, img_hw=(24, 24),
                            seed=0)
    plugin = root / "my_attacks.py"
    plugin.write_text(PLUGIN)
    ckpt = root / "runs"
    assert main_attack.main(_args(media, ckpt, "--num_epoch", "1", "--mode", "train")) == 0
    yield media, ckpt, plugin
    ATTACKS._items.pop("test_plugin_fraction", None)  # tests that list the registry see the project's attacks


def _args(media, ckpt: Path, *extra: str):
    return ["--dataset", "synthetic", "--categories", ",".join(CATS),
            "--list_train", str(media["train"]), "--list_val", str(media["val"]), "--list_test", str(media["test"]),
            "--audio_path", str(media["audio_path"]), "--frame_path", str(media["frame_path"]),
            "--audLen", "4096", "--imgSize", "16", "--batch_size_per_gpu", "3", "--workers", "0",
            "--ckpt", str(ckpt), "--id", "m", "--no_progress", "--disp_iter", "0", "--seed", "1", *extra]


def _eval(trained, *extra: str):
    media, ckpt, plugin = trained
    return _args(media, ckpt, "--mode", "eval", "--plugins", str(plugin), "--attack_type", "test_plugin_fraction",
                 "--eps", "visual=0.04,audio=0", *extra)


def _rows(ckpt: Path):
    return {d: json.loads((d / "results.json").read_text()) for d in (ckpt / "m" / "evals").iterdir()}


def test_plugin_attack_option_reaches_the_attack_from_the_command_line(trained):
    _, ckpt, _ = trained
    assert main_attack.main(_eval(trained, "--attack_args", "test_plugin_fraction:fraction=0.25")) == 0
    (rows,) = _rows(ckpt).values()
    (row,) = [r for r in (rows["rows"] if isinstance(rows, dict) else rows) if r["attack"] == "test_plugin_fraction"]
    # one step of 0.25 * eps: the largest change is that step (pixels away from the range's bounds move fully)
    assert row["max_delta_visual"] == pytest.approx(0.25 * 0.04, rel=1e-5)
    assert row["max_delta_audio"] == 0


@pytest.mark.parametrize("attack_args, words", [
    ("test_plugin_fraction:fractoin=0.5", ["--attack_args", "'fractoin'", "fraction, norm"]),
    ("test_plugin_fraction:fraction=big", ["--attack_args", "fraction='big'", "float"]),
    ("pgd:stepz=3", ["--attack_args", "pgd takes no argument 'stepz'", "steps, alpha"]),
    ("nosuch:steps=3", ["--attack_args", "registered attack", "test_plugin_fraction"]),
    ("autoattack:leave_out=fab", ["--attack_args", "fab not a stage of version 'standard'", "fab-t, square"]),
    ("autoattack:version=plus,leave_out=apgd-t+fab-x", ["--attack_args", "fab-x not a stage", "apgd-dlr"]),
    ("autoattack:version=fast", ["--attack_args", "unknown version 'fast'", "standard, plus, rand"]),
])
def test_bad_attack_args_exit_2_naming_the_accepted_arguments(trained, capsys, attack_args, words):
    _, ckpt, _ = trained
    before = sorted((ckpt / "m").rglob("*"))
    capsys.readouterr()
    code = run_cli(main_attack.main, _eval(trained, "--attack_args", attack_args))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and all(w in err[0] for w in words), err
    assert sorted((ckpt / "m").rglob("*")) == before  # nothing written
