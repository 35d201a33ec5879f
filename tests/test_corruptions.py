"""corruptions/: every registered corruption is deterministic given the seed, keeps the input ranges and
shapes, distorts more at a higher severity, does not depend on the batch a clip is in, leaves the other
modality untouched; the ImageNet-C ones equal imagecorruptions' own output and the audio ones
audiomentations' at each severity; the summary's CE / relative CE equal a hand computation; bad
--corruptions / --severities exit 2 before any work; an evaluation writes one row per corruption and severity."""
from __future__ import annotations

import json
import math
import os
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import main_attack
from corruptions import CORRUPTIONS, clip_rng, corrupt, list_corruptions, parse_severities
from pipeline.corruption_eval import corruption_rows
from reporting.corruption_summary import corruption_errors, corruption_summary, severity_table
from reporting.per_sample import CORRUPTION_CLEAN, CORRUPTION_KEYS, read_per_clip
from tests.conftest import ToyAV, run_argv
from utils.errors import run_cli
from utils.rundir import RunDir, eval_file

CATS = ["alpha", "beta", "gamma"]
MEDIA = dict(clips_per_class=2, num_frames=4, seconds=1.0, img_hw=(32, 32), seed=3)  # the `media` fixture's
RATE = 11025
NAMES = list_corruptions()


def _inputs(batch: int = 2, frames: int = 3, length: int = 4096, seed: int = 0):
    """A smooth visual clip (upsampled 8x8 noise: blurs have something to blur) and a tonal audio clip."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch * frames, 3, 8, 8, generator=g)
    v = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    v = v.view(batch, frames, 3, 32, 32).permute(0, 2, 1, 3, 4).contiguous()
    t = torch.arange(length) / RATE
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.15 * torch.sin(2 * math.pi * 1320 * t * (1 + t))
    a = (tone + 0.05 * torch.randn(batch, length, generator=g)).unsqueeze(1)
    return {"audio": a * torch.linspace(1.0, 0.6, batch)[:, None, None], "visual": v}


def _log_spec(a: torch.Tensor) -> torch.Tensor:
    w = torch.hann_window(256, dtype=torch.float64)
    return torch.log1p(10 * torch.stft(a[:, 0].double(), 256, window=w, return_complex=True).abs())


def _distortion(name: str, out, clean) -> float:
    """Mean |change| of the frames plus the log-spectrogram distance of the audio (a waveform distance says
    nothing about a pitch shift, which decorrelates the waveform at any amount)."""
    d = 0.0
    parts = dict(CORRUPTIONS.get(name).parts)
    if "visual" in parts:
        d += float((out["visual"] - clean["visual"]).abs().mean())
    if "audio" in parts:
        d += float((_log_spec(out["audio"]) - _log_spec(clean["audio"])).abs().mean())
    return d


def test_registry_has_the_issues_corruptions():
    assert len(list_corruptions("visual")) >= 8 and len(list_corruptions("audio")) >= 6
    assert len(list_corruptions("both")) >= 3
    for c in map(CORRUPTIONS.get, NAMES):
        assert c.source  # every corruption says where its severities come from


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_in_range_monotone_and_other_modality_untouched(name):
    clean = _inputs()
    parts = dict(CORRUPTIONS.get(name).parts)
    dist = []
    for s in range(1, 6):
        out = corrupt(name, clean, s, seed=7, indices=[4, 9], sample_rate=RATE)
        again = corrupt(name, clean, s, seed=7, indices=[4, 9], sample_rate=RATE)
        for m in ("audio", "visual"):
            assert out[m].shape == clean[m].shape and out[m].dtype == clean[m].dtype
            assert torch.equal(out[m], again[m]), f"{name} s{s}: not deterministic"
            if m not in parts:
                assert out[m] is clean[m]  # the untouched modality is the very same tensor
        assert out["visual"].min() >= 0 and out["visual"].max() <= 1
        assert out["audio"].abs().max() <= 1
        dist.append(_distortion(name, out, clean))
    assert all(b >= a - 1e-9 for a, b in zip(dist, dist[1:])), f"{name}: distortion not monotone {dist}"
    assert dist[-1] > dist[0] > 0, f"{name}: {dist}"


@pytest.mark.parametrize("name", NAMES)
def test_a_clips_corruption_does_not_depend_on_its_batch(name):
    clean = _inputs(batch=3)
    whole = corrupt(name, clean, 3, seed=1, indices=[5, 6, 7], sample_rate=RATE)
    for i, idx in enumerate([5, 6, 7]):
        one = corrupt(name, {m: x[i:i + 1] for m, x in clean.items()}, 3, seed=1, indices=[idx], sample_rate=RATE)
        for m in ("audio", "visual"):
            assert torch.equal(one[m][0], whole[m][i]), f"{name}: clip {idx} differs alone"


def test_random_corruptions_depend_on_seed_and_clip():
    clean = _inputs(batch=1)
    for name in ("gaussian_noise", "motion_blur", "occlusion", "audio_gaussian_noise", "background_noise"):
        m = CORRUPTIONS.get(name).modality
        base = corrupt(name, clean, 3, 0, [0], RATE)[m]
        assert not torch.equal(base, corrupt(name, clean, 3, 1, [0], RATE)[m]), name
        assert not torch.equal(base, corrupt(name, clean, 3, 0, [1], RATE)[m]), name


def test_bimodal_pairs_are_their_two_atoms():
    clean = _inputs()
    for name in list_corruptions("both"):
        out = corrupt(name, clean, 4, 2, [0, 3], RATE)
        for m, atom in CORRUPTIONS.get(name).parts:
            assert torch.equal(out[m], corrupt(atom, clean, 4, 2, [0, 3], RATE)[m]), name


def test_frame_freeze_repeats_frames_and_needs_two():
    v = _inputs(batch=1, frames=5)["visual"]
    out = corrupt("frame_freeze", {"visual": v}, 5, 0, [0], RATE)["visual"][0]
    assert all(torch.equal(out[:, t], v[0, :, 0]) for t in range(5))  # severity 5: the first frame throughout
    with pytest.raises(ValueError, match="at least 2 frames"):
        corrupt("frame_freeze", {"visual": v[:, :, 0]}, 1, 0, [0], RATE)


def test_background_noise_is_mixed_at_the_snr():
    a = _inputs(batch=1)["audio"] * 0.5  # far from clipping
    for s, snr in zip(range(1, 6), [20, 15, 10, 5, 0]):
        noise = corrupt("background_noise", {"audio": a}, s, 0, [0], RATE)["audio"] - a
        measured = 20 * math.log10(float(a.double().pow(2).mean().sqrt() / noise.double().pow(2).mean().sqrt()))
        assert abs(measured - snr) < 0.01, (s, measured)


def test_mp3_removes_the_codec_delay():
    a = _inputs(batch=1, length=8192)["audio"]
    for s in range(1, 6):
        err = corrupt("mp3", {"audio": a}, s, 0, [0], RATE)["audio"] - a
        assert float(err.pow(2).mean().sqrt()) < 0.35 * float(a.pow(2).mean().sqrt()), s  # aligned, not shifted


# ------------------------------------------------------------------------------------------------------------
# peers: imagecorruptions (ImageNet-C) and audiomentations, seeded with the clip's own generator state

@pytest.fixture(scope="module")
def imagecorruptions():
    if "pkg_resources" not in sys.modules:  # imagecorruptions 1.1.2 imports it for frost's files only; recent
        shim = types.ModuleType("pkg_resources")  # setuptools no longer ships it
        shim.resource_filename = lambda pkg, path: os.path.join(os.path.dirname(sys.modules[pkg].__file__), path)
        sys.modules["pkg_resources"] = shim
    with warnings.catch_warnings():  # its import of scipy.ndimage.interpolation is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        import imagecorruptions as ic
    return ic


PEER_VISUAL = {"gaussian_noise": "gaussian_noise", "shot_noise": "shot_noise", "defocus_blur": "defocus_blur",
               "motion_blur": "motion_blur", "jpeg": "jpeg_compression", "brightness": "brightness",
               "contrast": "contrast"}


@pytest.mark.parametrize("ours,theirs", sorted(PEER_VISUAL.items()))
def test_visual_corruptions_equal_imagecorruptions(imagecorruptions, ours, theirs):
    img = (_inputs(batch=1, frames=1)["visual"][0, :, 0] * 255).round().to(torch.uint8)  # (3, 32, 32)
    x = img.double().div(255).float()
    for s in range(1, 6):
        np.random.set_state(clip_rng(0, 3, ours).get_state())
        peer = imagecorruptions.corrupt(img.permute(1, 2, 0).numpy(), corruption_name=theirs, severity=s)
        mine = corrupt(ours, {"visual": x[None]}, s, 0, [3], RATE)["visual"][0].permute(1, 2, 0).double() * 255
        # the peer returns uint8 by truncation: ours lies in [peer, peer + 1)
        diff = mine.numpy() - peer.astype(np.float64)
        assert diff.min() > -1e-3 and diff.max() < 1 + 1e-3, (ours, s, diff.min(), diff.max())


@pytest.fixture(scope="module")
def audiomentations():
    import audiomentations as am
    return am


def _peer_audio(am, name: str, s: int, rng_state):
    if name == "audio_gaussian_noise":
        snr = [40, 30, 20, 10, 0][s - 1]
        return am.AddGaussianSNR(min_snr_db=snr, max_snr_db=snr, p=1.0)
    if name == "clipping":
        p = [10, 20, 40, 60, 80][s - 1]
        return am.ClippingDistortion(min_percentile_threshold=p, max_percentile_threshold=p, p=1.0)
    if name == "low_pass":
        c = [4000, 3000, 2000, 1000, 500][s - 1]
        return am.LowPassFilter(min_cutoff_freq=c, max_cutoff_freq=c, min_rolloff=24, max_rolloff=24,
                                zero_phase=True, p=1.0)
    if name == "pitch_shift":
        steps = [1, 2, 3, 4, 6][s - 1] * (1 if _first_uniform(rng_state) < 0.5 else -1)  # ours draws up/down
        return am.PitchShift(min_semitones=steps, max_semitones=steps, method="librosa_phase_vocoder", p=1.0)
    rate = [0.95, 0.9, 0.8, 0.7, 0.5][s - 1]
    return am.TimeStretch(min_rate=rate, max_rate=rate, leave_length_unchanged=True,
                          method="librosa_phase_vocoder", p=1.0)


def _first_uniform(state) -> float:
    r = np.random.RandomState()
    r.set_state(state)
    return r.uniform()


@pytest.mark.parametrize("name", ["audio_gaussian_noise", "clipping", "low_pass", "pitch_shift", "time_stretch"])
def test_audio_corruptions_equal_audiomentations(audiomentations, name):
    a = _inputs(batch=1, length=4096)["audio"]
    for s in range(1, 6):
        state = clip_rng(0, 2, name).get_state()
        np.random.set_state(state)
        peer = _peer_audio(audiomentations, name, s, state)(a[0, 0].numpy(), sample_rate=RATE)
        mine = corrupt(name, {"audio": a}, s, 0, [2], RATE)["audio"][0, 0].numpy()
        np.testing.assert_allclose(mine, np.clip(peer, -1, 1), atol=2e-5, err_msg=f"{name} severity {s}")


# ------------------------------------------------------------------------------------------------------------
# the summary

def _rows(accs, clean):
    return [{"corruption": c, "severity": s, "corrupt_acc": a, "clean_acc": clean}
            for c, per in accs.items() for s, a in per.items()]


def test_ce_and_relative_ce_by_hand():
    # model: clean 0.9; noise 0.8, 0.6 (errors 0.2, 0.4); blur 0.7, 0.7 (0.3, 0.3)
    # reference: clean 0.8; noise 0.6, 0.4 (0.4, 0.6); blur 0.8, 0.8 (0.2, 0.2: loses nothing)
    mine = _rows({"noise": {1: 0.8, 2: 0.6}, "blur": {1: 0.7, 2: 0.7}}, 0.9)
    ref = _rows({"noise": {1: 0.6, 2: 0.4}, "blur": {1: 0.8, 2: 0.8}}, 0.8)
    e = corruption_errors(mine, ref)
    assert e["noise"]["ce"] == pytest.approx(0.6 / 1.0)             # (0.2 + 0.4) / (0.4 + 0.6)
    assert e["noise"]["rce"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))  # minus clean errors 0.1 and 0.2
    assert e["blur"]["ce"] == pytest.approx(0.6 / 0.4)
    assert e["blur"]["rce"] is None                               # the reference loses nothing: undefined
    s = corruption_summary(mine, ref)
    assert s["mca"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.7) / 4)
    assert s["mce"] == pytest.approx((0.6 + 1.5) / 2)
    assert s["relative_mce"] == pytest.approx(0.4 / 0.6)
    assert s["undefined"] == ["blur: the reference loses nothing to it (relative CE)"]
    md = severity_table(mine).to_markdown()
    assert "mean corruption accuracy (mCA)" in md and "70.00" in md


def test_severities_parse():
    assert parse_severities("1-5") == (1, 2, 3, 4, 5) and parse_severities("5,1,3") == (1, 3, 5)
    for bad in ("0-3", "6", "2-1", "1,1", "a", ""):
        with pytest.raises(ValueError):
            parse_severities(bad)


def test_rows_do_not_depend_on_the_batch_size():
    model = ToyAV(num_classes=3, seed=1)
    g = torch.Generator().manual_seed(0)
    data = {"audio": torch.rand(6, 1, 96, generator=g) * 2 - 1, "visual": torch.rand(6, 3, 32, 32, generator=g),
            "label": torch.randint(0, 3, (6,), generator=g), "index": torch.arange(6)}

    def batches(size):
        return [{k: v[i:i + size] for k, v in data.items()} for i in range(0, 6, size)]

    names, sev = ("gaussian_noise", "av_wind"), (1, 5)
    rows2 = corruption_rows(model, batches(2), names, sev, torch.device("cpu"), 0, RATE, label="toy")
    rows6 = corruption_rows(model, batches(6), names, sev, torch.device("cpu"), 0, RATE, label="toy")
    assert [r["corrupt_acc"] for r in rows2] == [r["corrupt_acc"] for r in rows6]
    assert [(r["corruption"], r["severity"], r["n_samples"]) for r in rows2] == \
        [(n, s, 6) for n in names for s in sev]
    assert model.training  # the model's mode is restored


# ------------------------------------------------------------------------------------------------------------
# the command line

def _argv(media, ckpt, *extra):
    return run_argv(media, ckpt, "r", *extra, cats=CATS, imgSize=16, arch_frame="resnet10", batch_size_per_gpu=3,
                    num_frames=2)


@pytest.mark.parametrize("extra,needle", [
    (["--mode", "eval", "--corruptions", "fog"], "--corruptions: unknown corruption 'fog'"),
    (["--mode", "eval", "--corruptions", "jpeg", "--severities", "0-5"], "--severities"),
    (["--mode", "eval", "--corruptions", "jpeg", "--severities", "6"], "--severities"),
    (["--mode", "eval", "--severities", "2"], "needs --corruptions"),
    (["--corruptions", "jpeg"], "--mode eval"),
    (["--mode", "eval", "--corruptions", "mp3", "--arch_classifier", "visual"], "does not read"),
    (["--mode", "eval", "--corruptions", "frame_freeze", "--num_frames", "1"], "at least 2 frames"),
])
def test_bad_corruption_flags_exit_2_before_any_work(media, tmp_path, capsys, extra, needle):
    code = run_cli(main_attack.main, _argv(media, tmp_path, *extra))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_eval_writes_a_row_per_corruption_and_severity(media, tmp_path):
    assert main_attack.main(_argv(media, tmp_path, "--num_epoch", "1", "--lr_steps", "5", "--mode", "train")) == 0
    assert main_attack.main(_argv(media, tmp_path, "--mode", "eval", "--corruptions", "frame_freeze,av_codec",
                                  "--severities", "1,5")) == 0
    ev = RunDir(tmp_path / "r").latest_eval()
    rows = json.loads(eval_file(ev, "corruptions", ".json").read_text())
    assert [(r["corruption"], r["severity"]) for r in rows] == [("frame_freeze", 1), ("frame_freeze", 5),
                                                                ("av_codec", 1), ("av_codec", 5)]
    record = json.loads(eval_file(ev, "config").read_text())
    assert record["corruptions"]["mca"] == pytest.approx(sum(r["corrupt_acc"] for r in rows) / 4)
    assert all(r["clean_acc"] == record["clean"]["acc"] and r["n_samples"] == record["clean"]["n"] for r in rows)
    per_clip = read_per_clip(eval_file(ev, "corruption_per_sample"), CORRUPTION_KEYS)  # the report's paired tests
    assert sorted(per_clip) == sorted([CORRUPTION_CLEAN] + [(r["corruption"], r["severity"]) for r in rows])
    for key, acc in [(CORRUPTION_CLEAN, record["clean"]["acc"])] + [((r["corruption"], r["severity"]), r["corrupt_acc"])
                                                                      for r in rows]:
        clips = per_clip[key]
        assert len(clips) == record["clean"]["n"] and sum(clips.values()) / len(clips) == pytest.approx(acc)


# ------------------------------------------------------------------------------------------------------------
# the study section

def test_study_section_plans_every_headline_model_and_reports_against_concat(tmp_path, capsys):
    from pipeline.sections.corruptions import Corruptions
    from tests.test_study_plan import _dry_run, _list_flags, _media

    m = _media(tmp_path / "own", ["a", "b", "c", "d", "e"])
    base = ["--dataset", "custom", "--categories", "a", "b", "c", "d", "e", "--data_root", str(m["root"]),
            *_list_flags(m), "--preset", "quick", "--seeds", "0", "1", "--out", str(tmp_path / "s"), "--dry_run"]
    jobs, _ = _dry_run(capsys, [*base, "--sections", "corruptions"])
    added = [(name, cmd) for kind, name, cmd in jobs if name.startswith("corruptions")]
    assert [n for n, _ in added] == [f"corruptions {mod} seed{k}" for k in (0, 1) for mod in ("audio", "visual", "concat")]
    assert all("--corruptions all --severities 1,3,5" in cmd and "--mode eval" in cmd for _, cmd in added)

    concat = _rows({"jpeg": {1: 0.8, 3: 0.6}, "mp3": {1: 0.7, 3: 0.5}}, 0.9)
    audio = _rows({"mp3": {1: 0.4, 3: 0.2}}, 0.5)

    class View:
        fusions = ("concat",)

        def model_seeds(self, run_id):
            return [0]

        def kind_results(self, run_id, kind, seed=None, name="results"):
            assert kind == "corruptions" and name == "corruptions"  # the EVAL_FILES key, as StudyRecord takes it
            return {"concat": concat, "audio": audio}.get(run_id, [])

        def kind_per_clip(self, run_id, kind, name, keys, seed=None):
            return {}  # an evaluation without corruption_per_sample.json

    blocks = Corruptions().report(View())
    md = blocks[1].table.to_markdown()
    # audio vs concat on mp3: CE (0.6 + 0.8) / (0.3 + 0.5) = 175%; relative ((0.6-0.5)+(0.8-0.5)) / (0.2+0.4) = 66.7%
    assert "| audio | 1 | 50.0% | 30.0% | 175.0% | 66.7% |" in md.replace("  ", " ")
    assert "| concat | 1 | 90.0% | 65.0% | 100.0% | 100.0% |" in md.replace("  ", " ")
    assert blocks[3].kind == "table" and "severity 3" in blocks[3].table.to_markdown()
    assert blocks[-1].kind == "p" and "no paired test" in blocks[-1].text


def test_evaluations_without_corruptions_keep_their_configuration_hash(media, tmp_path):
    from pipeline.config import eval_identity, get_args_parser, parse_config

    plain = eval_identity(parse_config(get_args_parser(), _argv(media, tmp_path, "--mode", "eval")))
    assert not {"corruptions", "severities", "corruption_names", "severity_levels"} & set(plain)  # --reuse_eval finds old evals
    with_c = eval_identity(parse_config(get_args_parser(), _argv(media, tmp_path, "--mode", "eval", "--corruptions", "jpeg")))
    assert list(with_c["corruption_names"]) == ["jpeg"] and list(with_c["severity_levels"]) == [1, 2, 3, 4, 5]
