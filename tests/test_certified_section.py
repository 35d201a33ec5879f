"""Study section ``certified`` (pipeline/sections/certified.py): its planned commands (dry run), its report from a
fake view with hand-checked numbers, and main_certify.py run in-process by the study's step machinery on a tiny
trained run (the evaluation folder line, the folder found, the report reading it)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import main_attack
from pipeline.sections.certified import (BASE, NOISY, SIGMA, Certified, certify_flags, kind_of)
from pipeline.study import EVAL_FOLDER, IN_PROCESS, Study
from reporting.study_results import STUDY_FILE, RecordedView
from tests.conftest import run_argv
from utils.errors import run_cli
from utils.rundir import RunDir

CATS = ["alpha", "beta"]
MEDIA = dict(clips_per_class=2, num_frames=4, seconds=0.5, img_hw=(16, 16), seed=3)


def test_the_section_trains_concat_with_noise_and_certifies_both_models(tmp_path, capsys):
    from tests.test_study_plan import _dry_run, _list_flags, _media

    m = _media(tmp_path / "own", ["a", "b", "c", "d", "e"])
    base = ["--dataset", "custom", "--categories", "a", "b", "c", "d", "e", "--data_root", str(m["root"]),
            *_list_flags(m), "--preset", "quick", "--seeds", "0", "1", "--out", str(tmp_path / "s"), "--dry_run"]
    jobs, _ = _dry_run(capsys, [*base, "--sections", "certified"])
    cmds = {name: cmd for _, name, cmd in jobs}
    for seed in (0, 1):
        plain = cmds[f"train concat seed{seed}"]
        noisy = cmds[f"train {NOISY} seed{seed}"]
        # the preset's concat command, without --save_features, plus the noise: same start, epochs, lrs, batch
        expected = plain.replace(" --save_features", "").replace(
            f" --ckpt {tmp_path / 's' / 'concat'} --id seed{seed}",
            f" --noise_train audio=0.24,visual=0.12 --ckpt {tmp_path / 's' / NOISY} --id seed{seed}")
        assert noisy == expected, (noisy, plain)
        assert "--init_from" in noisy and "--adv_train" not in noisy
        eval_base = cmds[f"attack concat seed{seed}"].split(" --arch_classifier")[0].replace(
            "main_attack.py", "main_certify.py")
        for model in (BASE, NOISY):
            for method in ("smoothing", "mmcert"):
                cmd = cmds[f"certify {method} {model} seed{seed}"]
                own = " ".join(certify_flags(method, "quick"))
                assert cmd == (f"{eval_base} --arch_classifier concat {own} --ckpt {tmp_path / 's' / model} "
                               f"--id seed{seed} --mode eval --reuse_eval")
    assert "--sigma_audio 0.24 --sigma_visual 0.12" in cmds[f"certify smoothing {NOISY} seed0"]
    assert "--num_frames 4 --keep_frames 1" in cmds["certify mmcert concat seed0"]
    assert SIGMA == {"audio": 0.24, "visual": 0.12}  # 0.12 x range: waveform [-1, 1], frames [0, 1]


def _record(clips, method="smoothing", n=128, alpha=0.001):
    return {"method": method, "report_radii": [0, 0.05, 0.1, 0.2, 0.3], "categories": ["a", "b"],
            "params": {"n0": 16, "n": n, "alpha": alpha, "sigma_audio": 0.24, "sigma_visual": 0.12, "keep_frames": 1,
                       "num_frames": 4, "keep_segments": 4, "audio_segments": 16, "batch": 144, "seed": 0},
            "settings": {"visual": {"modalities": ["visual"], "clips": clips}}}


def _clip(label, prediction, radius):
    return {"id": f"c{label}{prediction}{radius}", "label": label, "prediction": prediction, "radius": radius,
            "radii": {"visual": radius}}


def test_the_report_gives_certified_accuracy_per_model_and_seed(tmp_path):
    # four clips: correct at 0.15, correct at 0.05, wrong at 0.3, abstained; by hand at r = 0, .05, .1, .2, .3:
    # 2/4, 1/4 (0.05 is not > 0.05: the open ball), 1/4, 0, 0
    hand = [_clip(0, 0, 0.15), _clip(1, 1, 0.05), _clip(0, 1, 0.3), _clip(1, -1, 0.0)]
    other = [_clip(0, 0, 0.25), _clip(1, 1, 0.25)]  # the noisy model, seed 1: 100% up to r = 0.2
    folders = {}
    for (model, seed), clips in {(BASE, 0): hand, (NOISY, 1): other}.items():
        d = tmp_path / model / f"seed{seed}" / "evals" / "x"
        d.mkdir(parents=True)
        (d / "certify.json").write_text(json.dumps(_record(clips)))
        folders[(model, seed)] = d
    view = SimpleNamespace(out=tmp_path, seeds=[0, 1], model_seeds=lambda m: [0, 1],
                           kind_dir=lambda m, k, seed=None: folders.get((m, seed)) if k == "certified" else None)
    blocks = Certified().report(view)
    tables = [b.table for b in blocks if b.kind == "table"]
    assert len(tables) == 1  # no MMCert evaluation in this view
    rows = tables[0].rows
    assert [(r["model"], r["seed"]) for r in rows] == [("concat (plain)", 0), ("concat + noise training", 1)]
    assert [rows[0][f"r={r}"] for r in ("0", "0.05", "0.1", "0.2", "0.3")] == [0.5, 0.25, 0.25, 0.0, 0.0]
    assert [rows[1][f"r={r}"] for r in ("0", "0.05", "0.1", "0.2", "0.3")] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert rows[0]["n"] == 4 and rows[0]["setting"] == "visual"
    text = " ".join(b.text for b in blocks if b.kind == "p")
    assert "n0 = 16, n = 128 draws per clip" in text and "confidence 0.999" in text and "4 clips" in text
    imgs = [b for b in blocks if b.kind == "img"]
    assert [b.path for b in imgs] == [f"certified_smoothing_{BASE}_seed0.png", f"certified_smoothing_{NOISY}_seed1.png"]
    assert all((tmp_path / b.path).is_file() for b in imgs)


class _View(RecordedView):
    def __init__(self, out: Path) -> None:
        self.out, self.seeds = out, [0]


def test_main_certify_runs_as_a_study_step_and_the_report_reads_it(media, tmp_path):
    assert IN_PROCESS["main_certify.py"].__module__ == "main_certify"
    kw = dict(cats=CATS, arch_frame="resnet10", arch_sound="anet_lite", imgSize=16, batch_size_per_gpu=8)
    assert run_cli(main_attack.main, [*run_argv(media, tmp_path, BASE, **kw), "--mode", "train",
                                      "--num_epoch", "1"]) == 0
    argv = ["main_certify.py", *run_argv(media, tmp_path, BASE, lists=("test",), **kw), "--arch_classifier", "concat",
            "--cert_method", "smoothing", "--cert_modalities", "audio", "visual", "--sigma_audio", "0.24",
            "--sigma_visual", "0.12", "--cert_n0", "4", "--cert_n", "16", "--cert_alpha", "0.05", "--cert_batch", "20",
            "--mode", "eval", "--reuse_eval"]
    rd = RunDir(tmp_path / BASE)
    printed = Study._in_process(argv)
    assert len(EVAL_FOLDER.findall(printed)) == 1
    folder = Study._eval_folder("certify smoothing concat", rd, printed)
    assert folder.parent == rd.evals and (folder / "certify.json").is_file()
    # the same step again: --reuse_eval announces the finished folder instead of certifying again
    again = Study._in_process(argv)
    assert "already finished with this configuration" in again
    assert Study._eval_folder("certify smoothing concat", rd, again) == folder
    (tmp_path / STUDY_FILE).write_text(json.dumps({"settings": {"seed": 0}, "seeds": [0], "steps": {
        "certify smoothing concat": {"run": BASE, "seed": 0, "folder": BASE, "kind": kind_of("smoothing"),
                                     "eval_id": folder.name}}}))
    blocks = Certified().report(_View(tmp_path))
    rows = next(b.table for b in blocks if b.kind == "table").rows
    assert [(r["setting"], r["modality"], r["n"]) for r in rows] == [("audio", "audio", 2), ("visual", "visual", 2)]
    record = json.loads((folder / "certify.json").read_text())
    for row in rows:
        clips = record["settings"][row["setting"]]["clips"]
        assert row["r=0"] == pytest.approx(sum(c["prediction"] == c["label"] for c in clips) / len(clips))
    assert "n0 = 4, n = 16 draws per clip" in " ".join(b.text for b in blocks)
    assert any(b.kind == "img" and (tmp_path / b.path).is_file() for b in blocks)
