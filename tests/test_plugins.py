"""A head with a hyperparameter added in one file of the user's own, through the command line: --plugins,
--fusion_args, the record in args.json and the checkpoint, the evaluation that rebuilds the head from it (in a
fresh process, without repeating either flag), and the refusals (exit 2, one line, nothing written)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_attack
from tests.fake_media import make_fake_media
from utils.errors import run_cli
from utils.plugins import load_plugins

REPO = Path(__file__).resolve().parents[1]
CATS = ["alpha", "beta", "gamma"]
PLUGIN = '''
import torch
from torch import nn
from models.fusion import FusionHead, register_fusion


@register_fusion("test_plugin_mlp")
class PluginMLP(FusionHead):
    modalities = ("audio", "visual")

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int, width: int = 64) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.mlp = nn.Sequential(nn.Linear(dim_audio + dim_visual, width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, feats):
        return self.mlp(torch.cat([self._get(feats, "audio"), self._get(feats, "visual")], dim=1))
'''


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return make_fake_media(root, CATS, clips_per_class=3, num_frames=2, seconds=0.5, img_hw=(24, 24), seed=0)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "my_heads.py"
    path.write_text(PLUGIN)
    return path


def base_args(media, ckpt: Path, run_id: str, *extra: str):
    return ["--dataset", "synthetic", "--categories", ",".join(CATS),
            "--list_train", str(media["train"]), "--list_val", str(media["val"]), "--list_test", str(media["test"]),
            "--audio_path", str(media["audio_path"]), "--frame_path", str(media["frame_path"]),
            "--audLen", "4096", "--imgSize", "16", "--batch_size_per_gpu", "3", "--workers", "0",
            "--ckpt", str(ckpt), "--id", run_id, "--no_progress", "--disp_iter", "0", "--seed", "1", *extra]


def _cli(argv, capsys):
    """Exit code and the error lines (``error: ...``) of a command line run in this process."""
    capsys.readouterr()
    code = run_cli(main_attack.main, argv)
    return code, "".join(l + "\n" for l in capsys.readouterr().err.splitlines() if l.startswith("error:"))


def test_plugin_head_trains_and_an_eval_rebuilds_it_from_the_checkpoint(media, plugin, tmp_path, capsys):
    train = base_args(media, tmp_path, "p", "--plugins", str(plugin), "--arch_classifier", "test_plugin_mlp",
                      "--fusion_args", "width=16", "--num_epoch", "1", "--mode", "train")
    assert main_attack.main(train) == 0
    run = tmp_path / "p"
    args = json.loads((run / "args.json").read_text())
    assert args["fusion_args"] == {"width": 16} and args["plugins"] == [str(plugin.resolve())]
    ck = torch.load(run / "checkpoint_best.pth", weights_only=True)
    assert ck["arch"]["fusion_args"] == {"width": 16} and ck["arch"]["plugins"] == [str(plugin.resolve())]
    assert ck["model"]["head.mlp.0.weight"].shape[0] == 16

    # a fresh process, neither --plugins nor --fusion_args: the checkpoint's record rebuilds the head
    ev = base_args(media, tmp_path, "p", "--arch_classifier", "test_plugin_mlp", "--mode", "eval",
                   "--attack_type", "fgsm", "--eps", "visual=0.01,audio=0")
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "main_attack.py"), *ev], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (eval_dir,) = (run / "evals").iterdir()
    assert json.loads((eval_dir / "results.json").read_text())

    # an explicit --fusion_args that builds another head is refused, naming both
    code, err = _cli(ev + ["--fusion_args", "width=8"], capsys)
    assert code == 2 and "--fusion_args" in err and "'width': 8" in err and "'width': 16" in err
    assert len(err.strip().splitlines()) == 1
    assert len(list((run / "evals").iterdir())) == 1


@pytest.mark.parametrize("fusion_args, words", [
    ("hiden=8", ["--fusion_args", "'hiden'", "hidden: int = 512"]),
    ("hidden=wide", ["--fusion_args", "hidden='wide'", "hidden: int = 512"]),
])
def test_bad_fusion_args_exit_2_before_any_work(media, tmp_path, capsys, fusion_args, words):
    code, err = _cli(base_args(media, tmp_path, "b", "--arch_classifier", "sum", "--fusion_args", fusion_args,
                               "--mode", "train"), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    for w in words:
        assert w in err
    assert not any(tmp_path.iterdir())


def test_missing_or_failing_plugin_exits_2_naming_the_file(media, tmp_path, capsys):
    missing = tmp_path / "nope.py"
    code, err = _cli(base_args(media, tmp_path, "m", "--plugins", str(missing), "--mode", "train"), capsys)
    assert code == 2 and "--plugins" in err and str(missing) in err and "no such file" in err
    broken = tmp_path / "broken_heads.py"
    broken.write_text("import torch\nraise RuntimeError('boom')\n")
    code, err = _cli(base_args(media, tmp_path, "m", "--plugins", str(broken), "--mode", "train"), capsys)
    assert code == 2 and str(broken) in err and "RuntimeError: boom" in err and "line 2" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken_heads.py"]


def test_plugin_is_imported_once(plugin):
    """Loading the same file twice (the pre-parse, then the config) registers its head once."""
    assert load_plugins([str(plugin)]) == load_plugins([str(plugin)]) == [str(plugin.resolve())]
