"""GPU readiness without a GPU: every new tensor and random draw in attacks/, models/ and pipeline/ takes its
device from its inputs (a static check), and the device-generic pieces run on tensors of a fake CUDA device.

Static check: calls ``torch.rand/randint/randperm/randn/empty/zeros/ones/full/arange/tensor`` without a
``device=`` keyword are flagged (the ``*_like`` forms take the device of their argument and are fine),
unless listed in ``ALLOWED`` with the reason they are genuinely CPU-only. Stale entries fail the test, so the
list stays true.

Smoke test under ``torch._subclasses.fake_tensor.FakeTensorMode`` with tensors on ``cuda``: fake CUDA
tensors work on this CPU-only torch for forward computations (a CPU tensor mixed in raises
``FakeTensorDeviceMismatchError``, which is what the test is for), but not for:

* autograd: a backward on fake CUDA tensors makes autograd's engine ask for a CUDA context
  (``hasPrimaryContext expects a valid device index``), impossible without a GPU, so no attack step and
  no training step's backward can run on fake CUDA; the training step is checked up to its loss;
* data-dependent steps (``.item()``, ``bool(tensor)``, ``nonzero``): every attack's ``__call__`` first
  checks that the inputs lie in their valid range (``attacks/base.py``, a host-side comparison), the
  restarts keep still-robust samples with ``nonzero``, and the defence's solver stops on a duality-gap
  tolerance, so whole attacks and the defended forward stay outside the mode. Their device-generic parts
  run inside it: every threat's step and projection (the exact L2 projection included), the DLR losses,
  the model's forward, the sparse-coding step of the defence.
"""
from __future__ import annotations

import ast
import pathlib
import sys
from collections import Counter
from typing import Dict, Tuple

import pytest
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
FACTORIES = {"rand", "randint", "randperm", "randn", "empty", "zeros", "ones", "full", "arange", "tensor"}
# (file, call as written) -> why it is CPU-only on purpose
ALLOWED: Dict[Tuple[str, str], str] = {
    ("pipeline/crmt_eval.py", "torch.tensor(radii[k], dtype=torch.float64)"):
        "host-side counts of per-clip bounds (Python floats gathered on the host), reduced across ranks after",
    ("pipeline/crmt_eval.py", "torch.tensor(float(len(radii[k])), dtype=torch.float64)"):
        "host-side clip count beside the counts above",
    ("models/certify.py", "torch.arange(k, n + 1, dtype=torch.float64)"):
        "host-side binomial tail of the Clopper-Pearson bound (fp64 arithmetic on counts, never on the device)",
    ("models/certify.py", "torch.zeros(self.num_classes, dtype=torch.long)"):
        "host-side class counts of the Monte-Carlo draws (each batch's predictions are moved with .cpu())",
    ("models/crmt.py", "torch.zeros(num_classes)"): "a parameter built at construction; model.to(device) moves it",
    ("models/crmt.py", 'torch.full((len(self.modalities), num_classes), float("nan"))'):
        "a buffer built at construction; model.to(device) moves it",
    ("models/crmt.py", "torch.full((num_classes,), float(a_init))"):
        "a parameter built at construction; model.to(device) moves it",
    ("models/missing.py", "torch.rand(batch, generator=generator)"):
        "modality-dropout draw from the seeded CPU generator (the same draws on every device); moved by the caller",
    ("models/missing.py", "torch.randint(len(modalities), (batch,), generator=generator)"):
        "modality-dropout draw from the seeded CPU generator (the same draws on every device); moved by the caller",
    ("pipeline/procedures.py", "torch.randint(len(ODD_CLASSES), (labels.numel(),), generator=self.gen)"):
        "single-source draw from the seeded CPU generator, moved to the labels' device at once",
    ("attacks/evaluate.py", "torch.zeros(len(_SUMS), dtype=torch.float64)"):
        "host-side counters added from Python numbers per batch; moved to the device once for the DDP reduction",
    ("attacks/evaluate.py", "torch.zeros(len(_MAXES), dtype=torch.float64)"):
        "host-side maxima of Python numbers; moved to the device once for the DDP reduction",
    ("models/defense/banks.py", "torch.randperm(feats.shape[0], generator=gen)"):
        "bank selection index from the seeded CPU generator: the same bank on every device",
    ("models/defense/banks.py", "torch.randperm(len(members), generator=gen)"):
        "bank selection index from the seeded CPU generator: the same bank on every device",
    ("models/defense/banks.py", "torch.randint(n, (1,), generator=gen)"):
        "k-means++ seeding draw from the seeded CPU generator, read at once with int()",
    ("models/visual_net.py", "torch.tensor(IMAGENET_MEAN)"):
        "a module buffer built at construction; model.to(device) moves it",
    ("models/visual_net.py", "torch.tensor(IMAGENET_STD)"):
        "a module buffer built at construction; model.to(device) moves it",
    ("pipeline/adaptive.py", "torch.tensor([all(r[\"correct\"][k] for r in results.values()) for k in keys], dtype=torch.float64)"):
        "per-clip booleans from Python dicts, read back with tolist() at once",
    ("pipeline/adaptive.py", "torch.tensor([worst.sum().item(), float(len(keys))], dtype=torch.float64)"):
        "two Python counts; utils.distributed moves them to CUDA for an nccl reduction",
}


def _unplaced_calls() -> Counter:
    found: Counter = Counter()
    for folder in ("attacks", "models", "pipeline"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for node in ast.walk(ast.parse(text)):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in FACTORIES and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "torch" and not any(k.arg == "device" for k in node.keywords)):
                    segment = " ".join(ast.get_source_segment(text, node).split())
                    found[(str(path.relative_to(ROOT)), segment)] += 1
    return found


def test_new_tensors_and_draws_take_their_device_from_the_inputs():
    found = _unplaced_calls()
    listed = dict(ALLOWED)
    unlisted = [f"{f}: {call}" for f, call in found if (f, call) not in listed]
    assert not unlisted, ("tensor factories without device= (pass device=x.device, use *_like, or list the "
                          "call in ALLOWED with its reason):\n" + "\n".join(unlisted))
    stale = [f"{f}: {call}" for f, call in listed if (f, call) not in found]
    assert not stale, "allow-list entries that no longer occur (remove them):\n" + "\n".join(stale)


def test_the_static_check_catches_a_cpu_draw(tmp_path, monkeypatch):
    # the check itself: a draw without device= in a scanned folder is found
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "x.py").write_text("import torch\nz = torch.randn(3, 4)\nw = torch.randn_like(z)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert list(_unplaced_calls()) == [("attacks/x.py", "torch.randn(3, 4)")]


# --- fake CUDA smoke test ---------------------------------------------------------------------------------

def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


@pytest.mark.parametrize("norm", ["Linf", "L2", "snr"])
def test_threat_steps_and_projections_run_on_fake_cuda(norm):
    from attacks.threats import make_threat

    with _fake_mode():
        x = torch.rand(2, 1, 64, device="cuda") * 2 - 1
        grad = torch.randn(2, 1, 64, device="cuda")
        t = make_threat(norm, x, 20.0 if norm == "snr" else 0.05, None, -1.0, 1.0)
        box = t.box(x)
        out = t.clip(t.step(x, grad), box)
        out = t.clip(t.scaled_step(out, grad, torch.full((2,), 2.0, device="cuda")), box)
        assert out.device.type == "cuda" and out.shape == x.shape


def test_dlr_losses_and_the_model_forward_run_on_fake_cuda():
    from attacks.apgd import dlr_loss
    from models import create_model

    with _fake_mode():
        logits = torch.randn(3, 5, device="cuda")
        labels = torch.randint(0, 5, (3,), device="cuda")
        assert dlr_loss(logits, labels).device.type == "cuda"
        assert dlr_loss(logits, labels, (labels + 1) % 5).device.type == "cuda"
        with torch.device("cuda"):  # parameters built as fake CUDA tensors (.to() cannot swap them in the mode)
            model = create_model("anet_lite", "resnet10", "concat", num_classes=3)
        a = torch.rand(2, 1, 4096, device="cuda") * 2 - 1
        v = torch.rand(2, 3, 2, 32, 32, device="cuda")
        out = model(audio=a, visual=v)
        # the training step up to its loss (its backward needs a real CUDA context, see the docstring)
        loss = F.cross_entropy(out, torch.randint(0, 3, (2,), device="cuda"))
        assert out.shape == (2, 3) and loss.device.type == "cuda"
