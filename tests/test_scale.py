"""The GPU-scale path on CPU stand-ins (issue: real scale): a failing rank ends a torchrun job, attacks stay
fp32 under autocast, channels_last and eval batch size in evaluation, the fast loader's exact inputs, and
the CPU-runnable part of benchmarks/gpu_check.sh."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_argv

REPO = Path(__file__).resolve().parents[1]
CATS = ["alpha", "beta", "gamma"]


MEDIA = dict(clips_per_class=6, num_frames=6, seconds=1.0, img_hw=(40, 40), seed=0)  # the `media` fixture's


def _args(media, ckpt: Path, run_id: str, *extra: str):
    return run_argv(media, ckpt, run_id, *extra, cats=CATS, imgSize=32, batch_size_per_gpu=2, seed=3)


def test_corrupt_frame_on_one_rank_ends_the_torchrun_job(media, tmp_path):
    # Every frame of one training clip is corrupt: the rank that draws it raises while the other rank waits
    # in DDP's gradient all-reduce. Before the fix, cleanup() ran a barrier and the job hung for ever.
    first = Path(media["train"]).read_text().splitlines()[0].split(",")[1]
    folder = Path(str(media["frame_path"]) + first)
    # JPEG start and end markers around garbage: the pre-flight's header/trailer check passes (it reads no
    # pixels), so the clip fails only when a rank decodes it mid-epoch, which is what this test is about
    for f in folder.glob("*.jpg"):
        f.write_bytes(b"\xff\xd8" + b"not a jpeg body" * 8 + b"\xff\xd9")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(31500 + os.getpid() % 1000), str(REPO / "main_attack.py"),
                           *_args(media, tmp_path, "corrupt", "--arch_classifier", "concat", "--num_epoch", "2",
                                  "--mode", "train")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert took < 60, f"the job took {took:.0f} s to end\n{out[-3000:]}"
    assert str(folder) in out  # the failing file is named
    assert "without a barrier" in out


def _model_cfg_loader(media, tmp_path, *extra: str):
    import torch

    from models import create_model
    from pipeline.build import build_dataset, build_loader
    from pipeline.config import get_args_parser, parse_config

    cfg = parse_config(get_args_parser(), _args(media, tmp_path, "amp", "--mode", "eval", *extra))
    torch.manual_seed(0)
    model = create_model(arch_sound="anet", arch_frame="resnet10", arch_classifier="concat", num_classes=3).eval()
    return model, cfg, build_loader(build_dataset(cfg, cfg.eval_list, train_mode=False), cfg, train=False)


def test_attack_grid_is_fp32_under_autocast(media, tmp_path):
    import torch

    from pipeline.attack_eval import attack_grid, take

    model, cfg, loader = _model_cfg_loader(media, tmp_path)
    loader = take(loader, 1)
    grid = [{"audio": 0.01, "visual": 0.01}]

    def run():
        advs = []
        rows = attack_grid(model, loader, ["pgd"], grid, torch.device("cpu"), steps=2,
                           on_batch=lambda info: advs.append({m: t.detach().clone() for m, t in info["adv"].items()}))
        return rows, advs

    rows, advs = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what --amp's autocast would leak into the grid
        rows_amp, advs_amp = run()
    assert rows_amp[0]["adv_acc"] == rows[0]["adv_acc"] and rows_amp[0]["clean_acc"] == rows[0]["clean_acc"]
    for a, b in zip(advs, advs_amp):
        for m in a:
            assert b[m].dtype == torch.float32 and torch.equal(a[m], b[m])


def test_clean_accuracy_under_amp_is_the_fp32_number(media, tmp_path):
    import types

    import torch

    from pipeline.engine import evaluate
    from pipeline.train import clean_accuracy

    model, cfg, loader = _model_cfg_loader(media, tmp_path, "--amp", "--channels_last")
    assert cfg.amp and cfg.channels_last
    ctx = types.SimpleNamespace(device=torch.device("cpu"), metrics=types.SimpleNamespace(log=lambda *a, **k: None))
    fp32 = evaluate(model, loader, torch.device("cpu"), amp=False, progress=False)
    bf16 = evaluate(model, loader, torch.device("cpu"), amp=True, progress=False)
    assert bf16["loss"] != fp32["loss"]  # the test can tell bf16 from fp32
    reported = clean_accuracy(model, cfg, ctx, cfg.eval_list, "test")
    assert reported["acc"] == fp32["acc"] and reported["loss"] == pytest.approx(fp32["loss"], rel=1e-5, abs=1e-6)


def test_channels_last_applies_to_evaluation(media, tmp_path):
    import types

    import torch

    from pipeline.build import place_model
    from pipeline.train import load_for_eval
    from utils.checkpoint import model_arch

    model, cfg, _ = _model_cfg_loader(media, tmp_path, "--channels_last")
    path = tmp_path / "ck.pth"
    torch.save({"model": model.state_dict(), "arch": model_arch(model, 3), "epoch": 1}, path)
    ctx = types.SimpleNamespace(device=torch.device("cpu"))
    place_model(model, cfg, ctx.device)  # the run's one placement (the mains), then the weights load in place
    load_for_eval(model, cfg, ctx, path)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_eval_batch_size_does_not_change_results(media, tmp_path):
    import torch

    from pipeline.attack_eval import attack_grid
    from pipeline.engine import evaluate

    model, cfg2, loader2 = _model_cfg_loader(media, tmp_path, "--eval_batch_size", "2")
    _, cfg5, loader5 = _model_cfg_loader(media, tmp_path, "--eval_batch_size", "5")
    assert loader2.batch_size == 2 and loader5.batch_size == 5
    cpu = torch.device("cpu")
    e2, e5 = evaluate(model, loader2, cpu, progress=False), evaluate(model, loader5, cpu, progress=False)
    assert e2["acc"] == e5["acc"] and e2["loss"] == pytest.approx(e5["loss"], rel=1e-5)
    grid = [{"audio": 0.01, "visual": 0.0}]
    r2 = attack_grid(model, loader2, ["fgsm"], grid, cpu)[0]
    r5 = attack_grid(model, loader5, ["fgsm"], grid, cpu)[0]
    for key in ("clean_acc", "adv_acc", "n_samples"):
        assert r2[key] == r5[key], key
    assert r2["max_delta_audio"] == pytest.approx(r5["max_delta_audio"], abs=1e-7)


def test_deterministic_switches():
    import torch

    from pipeline.context import set_kernel_switches

    try:
        set_kernel_switches(True, torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_gpu_check_script_parses_and_its_cpu_part_runs():
    script = REPO / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(script), "--cpu", "--tiny"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [l for l in proc.stdout.splitlines() if l.startswith("| ") and "| ok |" in l]
    assert len(rows) >= 6 and "FAIL" not in proc.stdout, proc.stdout
    for needle in ("train clips/s", "PGD-1 / bare", "sparse coding", "defended PGD-1 (bpda)", "(unrolled)"):
        assert needle in proc.stdout, needle


def test_srun_without_rank_is_refused(monkeypatch):
    from utils.distributed import init_distributed
    from utils.errors import UsageError

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    with pytest.raises(UsageError, match="srun with 4 tasks but without RANK.*torchrun"):
        init_distributed("cpu")


@pytest.mark.parametrize("train", [True, False])
def test_pipeline_model_inputs_equal_the_float_path(media, tmp_path, train):
    # The run's loader (uint8/int16 batches made float where they reach the device) and the float path
    # give the model bitwise the same inputs, so the demo's numbers cannot move.
    import torch

    from dataset.av_dataset import AVDataset
    from dataset.av_dataset import build_loader as plain_loader
    from pipeline.build import build_dataset, build_loader
    from pipeline.config import get_args_parser, parse_config
    from pipeline.engine import to_inputs

    cfg = parse_config(get_args_parser(), _args(media, tmp_path, "inputs", "--num_frames", "3", "--stride_frames",
                                                "2", "--eval_cache", str(tmp_path / "crops")))
    ds = build_dataset(cfg, cfg.eval_list, train_mode=train)  # (the torchrun test corrupts a training clip)
    assert ds.raw and (ds.crop_cache is None) == train
    old = AVDataset(cfg.eval_list, cfg.audio_path, cfg.frame_path, cfg.categories, train, num_frames=3,
                    stride_frames=2, frame_rate=cfg.frameRate, aud_len=cfg.audLen, aud_rate=cfg.audRate,
                    img_size=cfg.imgSize, seed=cfg.seed)
    for d in (ds, old):
        d.set_epoch(2)
    loader = build_loader(ds, cfg, train=False)  # in order (ShardSampler), batches of 2
    refs = list(plain_loader(old, batch_size=2, workers=0, shuffle=False))
    cpu = torch.device("cpu")
    gots = list(loader)
    assert len(gots) == len(refs) == len(loader)
    for ref, got in zip(refs, gots):
        new_in, old_in = to_inputs(got, cpu, ("audio", "visual")), to_inputs(ref, cpu, ("audio", "visual"))
        for m in ("audio", "visual"):
            assert new_in[m].dtype == torch.float32 and torch.equal(new_in[m], old_in[m]), m
        assert torch.equal(got["label"], ref["label"])


def test_compile_flag_compiles_the_nets_and_keeps_results(media, tmp_path, monkeypatch):
    # Inductor on this CPU compiles for minutes: the wiring is checked with the aot_eager backend (dynamo
    # and AOTAutograd, forward and backward), which needs no C compiler; benchmarks/bench_train.py
    # --compile measures inductor.
    import torch
    import torch.nn.functional as F

    from pipeline.build import build_model
    from pipeline.config import eval_identity, get_args_parser, parse_config

    cfg = parse_config(get_args_parser(), _args(media, tmp_path, "compiled", "--compile", "--arch_frame", "resnet10"))
    plain_cfg = cfg.replace(compile=False)
    assert cfg.compile and eval_identity(cfg) == eval_identity(plain_cfg)
    calls = []
    original = torch.nn.Module.compile

    def compile_aot_eager(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, backend="aot_eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_aot_eager)
    torch.manual_seed(0)
    compiled = build_model(cfg)
    torch.manual_seed(0)
    eager = build_model(plain_cfg)
    assert len(calls) == 2 and list(compiled.state_dict()) == list(eager.state_dict())
    a = torch.rand(3, 1, 4096) * 2 - 1
    v = torch.rand(3, 3, 1, 32, 32)
    outs = []
    for model in (compiled, eager):
        x = {"audio": a.clone().requires_grad_(True), "visual": v.clone().requires_grad_(True)}
        loss = F.cross_entropy(model(**x), torch.tensor([0, 1, 2]))
        loss.backward()  # the attacks' input gradients
        outs.append((loss.detach(), x["audio"].grad, x["visual"].grad))
    for c, e in zip(*outs):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-6)
