"""The reference code's command lines: the option strings of its 12 published scripts
(tests/data/reference_scripts.txt) parse here, and the AVE train and eval ones run a tiny training and
attack with only paths and sizes changed."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import main_attack
from dataset.specs import get_spec
from pipeline.config import add_defense_args, get_args_parser, parse_config
from tests.fake_media import make_fake_media
from utils.errors import UsageError
from utils.rundir import EVAL_FILES, RunDir

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "reference_scripts.txt"


def reference_scripts() -> Dict[str, Tuple[str, List[str]]]:
    """name -> (main, argv) as bash word-splits the script's unquoted $OPTS."""
    out: Dict[str, Tuple[str, List[str]]] = {}
    name = ""
    for line in DATA.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("== "):
            _, name, main = line.split()
            out[name] = (main, [])
        else:
            out[name][1].extend(line.split())
    return out


SCRIPTS = reference_scripts()


def _parser(main: str):
    return add_defense_args(get_args_parser()) if main == "main_defense" else get_args_parser()


def _value(argv: List[str], flag: str) -> List[str]:
    i = argv.index(flag) + 1
    out = []
    while i < len(argv) and not argv[i].startswith("--"):
        out.append(argv[i])
        i += 1
    return out


def test_the_twelve_scripts_are_there():
    assert len(SCRIPTS) == 12
    assert {m for m, _ in SCRIPTS.values()} == {"main_attack", "main_defense"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_reference_option_string_parses(name, caplog):
    main, argv = SCRIPTS[name]
    with caplog.at_level(logging.WARNING, logger="pipeline.reference_cli"):
        cfg = parse_config(_parser(main), argv, defense=main == "main_defense")
    if "--categories" in argv:
        cats = _value(argv, "--categories")
        assert list(cfg.categories) == cats and len(cats) == int(_value(argv, "--cls_num")[0])
        assert cfg.dataset == ("ave" if "AVE" in name else "kinetics_sounds")  # recognised from the classes
    if "--lr_steps" in argv:
        assert list(cfg.lr_steps) == [int(x) for x in _value(argv, "--lr_steps")]
    assert cfg.img_pool == "maxpool" and cfg.loss == "ce" and cfg.num_mix == 1
    if "eval" in name:
        assert cfg.mode == "eval" and cfg.eval_list == _value(argv, "--list_val")[0] and cfg.list_test == ""
        assert cfg.attacks == (("fgsm",) if "--attack_type" in argv and "fsgm" in argv else ("mim",))
    warned = [r.getMessage() for r in caplog.records]
    for flag in ("--dic", "--log_freq"):  # accepted, with one line saying what happens instead
        assert sum(m.startswith(flag + " ") for m in warned) == (flag in argv)
    gpus = int(_value(argv, "--num_gpus")[0])
    assert sum(m.startswith("--num_gpus") for m in warned) == (gpus != 1)
    if gpus != 1:
        assert any(f"NPROC={gpus}" in m and "torchrun" in m for m in warned)


@pytest.mark.parametrize("extra,flag", [(["--loss", "bce"], "--loss"), (["--num_mix", "2"], "--num_mix")])
def test_reference_options_without_a_meaning_here_are_refused(extra, flag):
    with pytest.raises(UsageError) as e:
        parse_config(get_args_parser(), ["--mode", "train", *extra])
    assert e.value.flag == flag


def test_categories_and_lr_steps_take_either_separator():
    cfg = parse_config(get_args_parser(), ["--dataset", "synthetic", "--categories", "a,b", "c",
                                           "--lr_steps", "3,4", "5"])
    assert cfg.categories == ("a", "b", "c") and cfg.lr_steps == (3, 4, 5)


def _swap(argv: List[str], values: Dict[str, List[str]]) -> List[str]:
    """``argv`` with the values of the flags in ``values`` replaced (paths and sizes only)."""
    out: List[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in values:
            out += [a, *values[a]]
            i += 1 + len(_value(argv, a))
        else:
            out.append(a)
            i += 1
    return out


def test_reference_ave_train_and_eval_scripts_run(tmp_path, caplog):
    """train_attack_AVE.sh and eval_attack_AVE.sh, paths and sizes changed, on fake media of the 28 classes."""
    cats = list(get_spec("ave").categories)
    media = make_fake_media(tmp_path / "media", cats, clips_per_class=2, num_frames=4, seconds=0.5,
                            img_hw=(24, 24), seed=0)
    run_id = "AVE_av_reg_maxSim"
    paths = {"--list_train": [str(media["train"])], "--list_val": [str(media["val"])],
             "--audio_path": [str(media["audio_path"])], "--frame_path": [str(media["frame_path"])],
             "--audLen": ["4096"], "--workers": ["0"], "--num_epoch": ["1"]}
    _, train = SCRIPTS["train_attack_AVE"]
    argv = _swap(train, paths) + ["--ckpt", str(tmp_path / "runs"), "--imgSize", "16", "--no_progress"]
    assert main_attack.main(argv) == 0
    run = RunDir(tmp_path / "runs" / run_id)
    assert run.checkpoint_best.is_file()
    _, evaluate = SCRIPTS["eval_attack_AVE"]
    paths.update({"--id": [run_id], "--list_val": [str(media["test"])]})
    argv = _swap(evaluate, paths) + ["--ckpt", str(tmp_path / "runs"), "--imgSize", "16", "--no_progress",
                                     "--eps", "visual=0,audio=0", "visual=0.006,audio=0.006", "--attack_steps", "2"]
    assert main_attack.main(argv) == 0
    assert len(list(run.root.glob(f"evals/*/{EVAL_FILES['config']}"))) == 1
