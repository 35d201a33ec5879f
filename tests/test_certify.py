"""Certified robustness (models/certify.py, models/mmcert.py, main_certify.py): the statistics against scipy,
abstention, soundness of the smoothing certificate on a linear model whose smoothed classifier has a closed form,
MMCert's certified counts on a constructed worst case (checked by enumerating every sub-sample), bad flags, and one
end-to-end run on fake media."""
from __future__ import annotations

import itertools
import json
import math
from statistics import NormalDist

import pytest
import torch
import torch.nn as nn
from scipy.stats import beta, binomtest

import main_attack
import main_certify
from models.certify import (ABSTAIN, GaussianSmoothing, binom_test_half, clopper_pearson_lower,
                            clopper_pearson_upper, min_certify_samples)
from models.mmcert import SubsamplingCertifier, certified, certified_counts
from reporting.certify import certified_accuracy
from tests.conftest import run_argv
from utils.errors import run_cli
from utils.rundir import RunDir, eval_file

CATS = ["alpha", "beta"]
MEDIA = dict(clips_per_class=2, num_frames=4, seconds=0.5, img_hw=(16, 16), seed=3)
PHI = NormalDist()


# ------------------------------------------------------------------ statistics
@pytest.mark.parametrize("k,n,alpha", [(990, 1000, 0.001), (5, 10, 0.05), (100, 100, 0.001), (1, 7, 0.3),
                                       (52000, 100000, 0.001), (0, 50, 0.01), (37, 40, 0.1)])
def test_clopper_pearson_equals_scipy(k, n, alpha):
    want = beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(want, rel=1e-9, abs=1e-12)
    want_up = beta.ppf(1 - alpha, k + 1, n - k) if k < n else 1.0
    assert clopper_pearson_upper(k, n, alpha) == pytest.approx(want_up, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("na,nb", [(30, 12), (5, 5), (0, 9), (60, 40), (11, 0)])
def test_binomial_test_equals_scipy(na, nb):
    assert binom_test_half(na, nb) == pytest.approx(binomtest(na, na + nb, 0.5).pvalue, rel=1e-9)


def test_the_smallest_n_that_can_certify():
    for alpha in (0.001, 0.01, 0.05):
        n = min_certify_samples(alpha)
        assert clopper_pearson_lower(n, n, alpha) > 0.5 >= clopper_pearson_lower(n - 1, n - 1, alpha)


# ------------------------------------------------------------------ toy models
class LinearAV(nn.Module):
    """Two classes, logits (0, w_a.a + w_v.v + b): its Gaussian smoothing has a closed form."""

    def __init__(self, la: int = 12, dv: int = 3 * 2 * 4 * 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w_a = nn.Parameter(torch.randn(la, generator=g, dtype=torch.float64))
        self.w_v = nn.Parameter(torch.randn(dv, generator=g, dtype=torch.float64))
        self.b = 0.1

    def margin(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return audio.flatten(1) @ self.w_a + visual.flatten(1) @ self.w_v + self.b

    def forward(self, audio=None, visual=None):
        m = self.margin(audio, visual)
        return torch.stack([torch.zeros_like(m), m], dim=1)


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {"audio": torch.rand(1, 1, 12, generator=g, dtype=torch.float64) * 0.2 - 0.1,
            "visual": torch.rand(1, 3, 2, 4, 4, generator=g, dtype=torch.float64) * 0.1}


def _exact_class(model: LinearAV, x) -> int:
    """The smoothed classifier's class: P(class 1) = Phi(margin / s) > 1/2 iff margin > 0 (any noise)."""
    return int(model.margin(x["audio"], x["visual"]).item() > 0)


@pytest.mark.parametrize("setting", [("audio", "visual"), ("audio",), ("visual",)])
def test_smoothing_certificate_is_sound_on_a_linear_model(setting):
    model = LinearAV()
    x = _inputs()
    sig = {"audio": 0.05, "visual": 0.02}
    sigmas = {m: sig[m] for m in setting}
    cert = GaussianSmoothing(model, sigmas, num_classes=2, batch=500).certify(
        x, n0=50, n=2000, alpha=0.001, gen=torch.Generator().manual_seed(0))
    assert cert.prediction == _exact_class(model, x)
    # the exact radius in the sigma-normalised space: |margin| / ||(sigma_a w_a, sigma_v w_v)||
    w = {"audio": model.w_a.detach(), "visual": model.w_v.detach()}
    scaled = torch.cat([sigmas[m] * w[m] for m in setting])
    margin = model.margin(x["audio"], x["visual"]).item()
    exact = abs(margin) / scaled.norm().item()
    p_exact = PHI.cdf(exact)  # the smoothed classifier's true top-class probability
    assert 0.5 < cert.p_lower <= p_exact and 0 < cert.radius <= exact
    assert cert.radii == {m: pytest.approx(sigmas[m] * cert.radius) for m in setting}
    sign = 1.0 if margin > 0 else -1.0
    g = torch.Generator().manual_seed(7)

    def attacked(z_dir: torch.Tensor, length: float):
        """x moved by length * z_dir (a unit vector in the normalised space of the randomised inputs)."""
        out, start = dict(x), 0
        z_dir = z_dir / z_dir.norm()
        for m in setting:
            d = w[m].numel()
            out[m] = x[m] + (length * sigmas[m] * z_dir[start:start + d]).view_as(x[m])
            start += d
        return out

    worst = -sign * scaled  # straight at the decision boundary
    for z_dir in [worst] + [torch.randn(scaled.numel(), generator=g, dtype=torch.float64) for _ in range(300)]:
        assert _exact_class(model, attacked(z_dir, 0.999 * cert.radius)) == cert.prediction
    # per modality with the other fixed: an L2 step of 0.999 sigma_m R on modality m alone
    for m in setting:
        z = torch.cat([(-sign * sigmas[k] * w[k]) if k == m else torch.zeros_like(w[k]) for k in setting])
        assert _exact_class(model, attacked(z, 0.999 * cert.radii[m] / sigmas[m])) == cert.prediction
    # the check can fail: just past the exact radius the prediction flips
    assert _exact_class(model, attacked(worst, 1.01 * exact)) != cert.prediction


class SignOf(nn.Module):
    """Class 1 when the first audio sample is positive: at 0 the smoothed classes tie."""

    def forward(self, audio=None, visual=None):
        s = audio[:, 0, 0]
        return torch.stack([-s, s], dim=1)


def test_abstains_when_the_top_class_is_not_clearly_ahead():
    smooth = GaussianSmoothing(SignOf(), {"audio": 0.5}, num_classes=2, batch=256)
    tie = {"audio": torch.zeros(1, 1, 4)}
    cert = smooth.certify(tie, n0=50, n=1000, alpha=0.001, gen=torch.Generator().manual_seed(0))
    assert cert.prediction == ABSTAIN and cert.radius == 0 and cert.p_lower < 0.5
    assert smooth.predict(tie, 1000, 0.001, torch.Generator().manual_seed(1)) == ABSTAIN
    clear = {"audio": torch.full((1, 1, 4), 2.0)}  # 4 sigmas ahead
    cert = smooth.certify(clear, n0=50, n=1000, alpha=0.001, gen=torch.Generator().manual_seed(0))
    assert cert.prediction == 1 and cert.radius > 0
    assert smooth.predict(clear, 1000, 0.001, torch.Generator().manual_seed(1)) == 1


# ------------------------------------------------------------------ MMCert
class MarkerDetector(nn.Module):
    """Class 1 as soon as it sees a marked element (a frame or audio sample > 0.5), else class 0: the worst
    case of the sub-sampling certificate (every draw that keeps a modified element changes its answer)."""

    def forward(self, audio=None, visual=None):
        hit = (visual.flatten(2).amax(dim=(1, 2)) > 0.5) | (audio.flatten(1).amax(dim=1) > 0.5)
        return torch.stack([(~hit).float(), hit.float()], dim=1)


def _clip(frames: int = 6, samples: int = 64):
    return {"audio": torch.zeros(1, 1, samples), "visual": torch.zeros(1, 3, frames, 4, 4)}


def _exact_p1(x, sizes, marked) -> float:
    """P(class 1) of the ensemble, enumerating every pair of sub-samples (frames x audio segments)."""
    (nv, kv), (na, ka) = sizes["visual"], sizes["audio"]
    hits = 0
    for fv in itertools.combinations(range(nv), kv):
        for fa in itertools.combinations(range(na), ka):
            hits += bool(set(fv) & set(marked.get("visual", ()))) or bool(set(fa) & set(marked.get("audio", ())))
    return hits / (math.comb(nv, kv) * math.comb(na, ka))


def _mark(x, marked, segments: int):
    out = {k: v.clone() for k, v in x.items()}
    for f in marked.get("visual", ()):
        out["visual"][:, :, f] = 1.0
    length = x["audio"].shape[-1]
    for s in marked.get("audio", ()):
        out["audio"][..., s * length // segments] = 1.0
    return out


def test_mmcert_counts_are_exact_on_the_worst_case():
    sizes = {"visual": (6, 2), "audio": (8, 2)}
    joint, per = certified_counts(1.0, sizes)
    # hand count: C(5,2)/C(6,2) = 10/15 > 1/2 > C(4,2)/15; C(6,2)/C(8,2) = 15/28 > 1/2 > C(5,2)/28; jointly
    # 10/15 * 21/28 = 1/2 exactly, a tie, so no element is certified in both at once
    assert per == {"visual": 1, "audio": 2} and joint == 0
    x = _clip()
    for m in ("visual", "audio"):
        for r in range(sizes[m][0]):
            p1 = _exact_p1(x, sizes, {m: range(r)})
            assert (p1 < 0.5) == (r <= per[m]) == certified(1.0, sizes, {m: r})  # certified iff the attack fails
    assert _exact_p1(x, sizes, {"visual": [0], "audio": [0]}) == 0.5


def test_mmcert_sampling_matches_the_enumeration_and_certifies():
    model = MarkerDetector()
    cert = SubsamplingCertifier(model, {"visual": 2, "audio": 2}, num_classes=2, audio_segments=8, batch=400)
    x = _clip()
    attacked = _mark(x, {"visual": [1], "audio": [3, 5]}, 8)
    c = cert.counts(attacked, 4000, torch.Generator().manual_seed(0))
    p1 = _exact_p1(x, cert.sizes(x), {"visual": [1], "audio": [3, 5]})
    assert abs(c[1].item() / 4000 - p1) < 0.03
    res = cert.certify(x, n0=20, n=500, alpha=0.001, gen=torch.Generator().manual_seed(1))
    assert res.prediction == 0 and res.radii == {"visual": 1.0, "audio": 2.0} and res.radius == 0.0
    # visual sub-sampling only: the audio is seen whole, so any audio change is uncertified
    only_v = SubsamplingCertifier(model, {"visual": 2}, num_classes=2, batch=400)
    res = only_v.certify(x, n0=20, n=500, alpha=0.001, gen=torch.Generator().manual_seed(1))
    assert res.radii == {"visual": 1.0}
    clips = [{"label": 0, "prediction": 0, "radius": 0.0, "radii": {"visual": 1.0}},
             {"label": 1, "prediction": 0, "radius": 0.0, "radii": {"visual": 2.0}}]
    assert certified_accuracy(clips, "visual", [0, 1, 2], "mmcert") == [0.5, 0.5, 0.0]


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("extra,flag", [
    (["--sigma_audio", "0"], "--sigma_audio"),
    (["--sigma_visual", "-0.1"], "--sigma_visual"),
    (["--cert_n", "9", "--cert_alpha", "0.001"], "--cert_n"),
    (["--cert_alpha", "1.5"], "--cert_alpha"),
    (["--mode", "train"], "--mode"),
    (["--cert_method", "mmcert", "--keep_frames", "4", "--num_frames", "4"], "--keep_frames"),
    (["--cert_method", "mmcert", "--cert_modalities", "audio", "--keep_segments", "16"], "--keep_segments"),
    (["--arch_classifier", "audio", "--cert_modalities", "both"], "--cert_modalities"),
    (["--attack_type", "pgd"], "--attack_type"),
])
def test_bad_flags_exit_2_before_any_work(tmp_path, capsys, extra, flag):
    argv = ["--dataset", "synthetic", "--ckpt", str(tmp_path / "runs"), "--id", "x", *extra]
    assert run_cli(main_certify.main, argv) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_certify_end_to_end_on_fake_media(media, tmp_path, capsys):
    base = run_argv(media, tmp_path, "tiny", cats=CATS, arch_frame="resnet10", arch_sound="anet_lite", imgSize=16, num_frames=4,
                    batch_size_per_gpu=8)
    assert run_cli(main_attack.main, [*base, "--mode", "train", "--num_epoch", "1"]) == 0
    evaluate = [*run_argv(media, tmp_path, "tiny", cats=CATS, lists=("test",), arch_frame="resnet10", arch_sound="anet_lite", imgSize=16,
                          num_frames=4, batch_size_per_gpu=8)]
    smooth = [*evaluate, "--cert_n0", "4", "--cert_n", "16", "--cert_alpha", "0.05", "--cert_batch", "8"]
    assert run_cli(main_certify.main, smooth) == 0
    run = RunDir(tmp_path / "tiny")
    rec = json.loads(eval_file(run.latest_eval(), "certify").read_text())
    assert rec["method"] == "smoothing" and set(rec["settings"]) == {"audio", "visual", "both"}
    clips = rec["settings"]["both"]["clips"]
    assert len(clips) == 2 and all(c["prediction"] == -1 or c["radius"] > 0 for c in clips)
    assert eval_file(run.latest_eval(), "certify_table", ".md").is_file()
    assert eval_file(run.latest_eval(), "certify_plot").is_file()
    # the same command twice gives the same certificates (draws seeded per clip)
    assert run_cli(main_certify.main, smooth) == 0
    again = json.loads(eval_file(run.latest_eval(), "certify").read_text())
    strip = lambda r: [{k: v for k, v in c.items() if k != "seconds"} for c in r["settings"]["both"]["clips"]]
    assert strip(again) == strip(rec)
    mm = [*evaluate, "--cert_method", "mmcert", "--keep_frames", "2", "--audio_segments", "8", "--keep_segments",
          "2", "--cert_n0", "4", "--cert_n", "16", "--cert_alpha", "0.05", "--cert_batch", "8"]
    assert run_cli(main_certify.main, mm) == 0
    rec = json.loads(eval_file(run.latest_eval(), "certify").read_text())
    assert rec["method"] == "mmcert" and all(set(c["radii"]) <= {"audio", "visual"}
                                             for b in rec["settings"].values() for c in b["clips"])
