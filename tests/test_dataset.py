"""AVDataset: shapes and ranges, labels, reproducible augmentation, worker-count independence, the exact
audio window (centring, tiling, clamping), frame stride, preload equivalence and the bad-input errors."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from dataset import index
from dataset import transforms as T
from dataset.av_dataset import AVDataset, build_loader
from dataset.errors import IndexFormatError, MediaError
from tests.fake_media import make_fake_media, write_clip

CATS = ["alpha", "beta", "gamma"]
RATE, FPS = 11025, 8
L = 4096  # audio window in these tests
GRAY_STEP = 10  # frame k of a "ramp clip" is uniformly grey at level GRAY_STEP * k


MEDIA = dict(clips_per_class=3, num_frames=8, seconds=1.0, img_hw=(40, 52), seed=1)  # the `media` fixture's


def make_ds(media, split="train", train=True, **kw):
    args = dict(num_frames=1, stride_frames=1, frame_rate=FPS, aud_len=L, aud_rate=RATE, img_size=32, seed=5)
    args.update(kw)
    return AVDataset(media[split], media["audio_path"], media["frame_path"], CATS, train, **args)


def ramp_clip(root: Path, cls: str, vid: str, n_frames: int, n_samples: int, rate: int = RATE) -> str:
    """A clip whose frame k is grey level 10*k and whose audio sample j is exactly j / 32768."""
    frames = [np.full((40, 40, 3), GRAY_STEP * k, np.uint8) for k in range(1, n_frames + 1)]
    row = write_clip(root, cls, vid, frames, np.zeros(1, np.float32), rate)
    sf.write(str(root / "data" / "audio" / cls / f"{vid}.wav"), np.arange(n_samples, dtype=np.int16), rate,
             subtype="PCM_16")
    return row


def ramp_ds(tmp_path, rows, train=False, **kw):
    csv = tmp_path / "list.csv"
    csv.write_text("".join(r + "\n" for r in rows))
    args = dict(num_frames=1, stride_frames=1, frame_rate=FPS, aud_len=L, aud_rate=RATE, img_size=32, seed=0)
    args.update(kw)
    return AVDataset(csv, tmp_path / "data" / "audio", tmp_path / "data" / "frames", CATS, train, **args)


def frame_numbers(visual: torch.Tensor) -> list:
    """Recover the frame numbers of a ramp clip from the mean grey level of each frame."""
    return [int(round(float(visual[:, t].mean()) * 255 / GRAY_STEP)) for t in range(visual.shape[1])]


# ------------------------------------------------------------------------------------------------ basics
@pytest.mark.parametrize("train", [True, False])
def test_sample_shapes_dtypes_ranges_and_labels(media, train):
    ds = make_ds(media, train=train, num_frames=3, stride_frames=2)
    assert len(ds) == 6  # 2 train clips per class
    for i in range(len(ds)):
        s = ds[i]
        assert s["audio"].shape == (1, L) and s["audio"].dtype == torch.float32
        assert s["visual"].shape == (3, 3, 32, 32) and s["visual"].dtype == torch.float32
        assert s["audio"].abs().max() <= 1.0 and s["audio"].abs().max() > 0.1
        assert 0.0 <= s["visual"].min() and s["visual"].max() <= 1.0 and s["visual"].std() > 0.01
        assert s["index"] == i
        cls = s["id"].split("/")[0]
        assert s["label"] == CATS.index(cls) and s["id"] == f"{cls}/{s['id'].split('/')[1]}"
    assert sorted(ds.labels) == [0, 0, 1, 1, 2, 2]


def test_label_follows_category_order(media):
    ds = AVDataset(media["train"], media["audio_path"], media["frame_path"], list(reversed(CATS)), False,
                   aud_len=L, img_size=32)
    assert [2 - ds[i]["label"] for i in range(len(ds))] == [CATS.index(ds[i]["id"].split("/")[0])
                                                           for i in range(len(ds))]


def test_train_augmentation_reproducible_and_varies_with_epoch(media):
    ds = make_ds(media)
    ds.set_epoch(3)
    a = [ds[i] for i in range(len(ds))]
    again = make_ds(media)
    again.set_epoch(3)
    for i in range(len(ds)):
        assert torch.equal(a[i]["visual"], again[i]["visual"]) and torch.equal(a[i]["audio"], again[i]["audio"])
    ds.set_epoch(4)
    b = [ds[i] for i in range(len(ds))]
    assert all(not torch.equal(x["audio"], y["audio"]) for x, y in zip(a, b))
    assert any(not torch.equal(x["visual"], y["visual"]) for x, y in zip(a, b))
    other_seed = make_ds(media, seed=6)
    other_seed.set_epoch(3)
    assert not torch.equal(other_seed[0]["audio"], a[0]["audio"])


def _by_index(loader):
    out = {}
    for batch in loader:
        for j, idx in enumerate(batch["index"].tolist()):
            out[idx] = (batch["visual"][j], batch["audio"][j], batch["label"][j].item(), batch["id"][j])
    return out


@pytest.mark.parametrize("train", [False, True])
def test_same_samples_with_0_or_2_workers(media, train):
    ds = make_ds(media, train=train, num_frames=2, stride_frames=3)
    ds.set_epoch(2)
    one = _by_index(build_loader(ds, batch_size=4, workers=0, shuffle=False))
    two_loader = build_loader(ds, batch_size=3, workers=2, shuffle=True, seed=9)
    two = _by_index(two_loader)
    assert sorted(one) == sorted(two) == list(range(len(ds)))
    for i in one:
        assert torch.equal(one[i][0], two[i][0]) and torch.equal(one[i][1], two[i][1]), i
        assert one[i][2:] == two[i][2:]
    if train:  # set_epoch reaches the persistent workers
        ds.set_epoch(7)
        three = _by_index(two_loader)
        assert all(not torch.equal(three[i][1], two[i][1]) for i in three)
        assert all(torch.equal(three[i][1], ds[i]["audio"]) for i in three)


def test_preload_gives_identical_samples(media):
    for train in (True, False):
        plain = make_ds(media, train=train, num_frames=3, stride_frames=2)
        cached = make_ds(media, train=train, num_frames=3, stride_frames=2, preload=True)
        for ds in (plain, cached):
            ds.set_epoch(1)
        for i in range(len(plain)):
            assert torch.equal(plain[i]["visual"], cached[i]["visual"])
            assert torch.equal(plain[i]["audio"], cached[i]["audio"])


# ------------------------------------------------------------------------------ exact frames and audio
def test_eval_audio_window_is_centred_on_middle_frame(tmp_path):
    ds = ramp_ds(tmp_path, [ramp_clip(tmp_path, "alpha", "long", 16, 20000)])
    s = ds[0]
    assert frame_numbers(s["visual"]) == [8]  # middle of 16 frames: (16 + 1) // 2
    centre = (15 * RATE) // (2 * FPS)  # frame 8 is centred at 7.5 / 8 s
    expect = np.arange(centre - L // 2, centre - L // 2 + L) / 32768.0
    np.testing.assert_array_equal(s["audio"][0].numpy(), expect.astype(np.float32))
    assert round(float(s["audio"][0, L // 2]) * 32768) == centre


def test_short_audio_is_tiled_and_window_clamped(tmp_path):
    rows = [ramp_clip(tmp_path, "alpha", "short", 16, 3000), ramp_clip(tmp_path, "beta", "start", 1, 20000)]
    ds = ramp_ds(tmp_path, rows)
    # 3000 samples tiled twice (6000); the centre 10335 is past the end, so the window ends at 6000
    got = np.round(ds[0]["audio"][0].numpy() * 32768).astype(np.int64)
    np.testing.assert_array_equal(got, np.arange(6000 - L, 6000) % 3000)
    # one frame: centre sample 689 < L // 2, so the window starts at sample 0
    got = np.round(ds[1]["audio"][0].numpy() * 32768).astype(np.int64)
    np.testing.assert_array_equal(got, np.arange(L))


def test_multi_frame_stride_eval_and_train(tmp_path):
    ds = ramp_ds(tmp_path, [ramp_clip(tmp_path, "alpha", "v", 16, 20000)], num_frames=3, stride_frames=2)
    assert frame_numbers(ds[0]["visual"]) == [6, 8, 10]
    assert frame_numbers(ramp_ds(tmp_path, [ramp_clip(tmp_path, "alpha", "v", 16, 20000)], num_frames=4,
                                 stride_frames=3)[0]["visual"]) == [2, 5, 8, 11]
    train = ramp_ds(tmp_path, [ramp_clip(tmp_path, "alpha", "v", 16, 20000)], train=True, num_frames=3,
                    stride_frames=2)
    centres = set()
    for epoch in range(12):
        train.set_epoch(epoch)
        s = train[0]
        ks = frame_numbers(s["visual"])
        c = ks[1]
        assert ks == [c - 2, c, c + 2] and 3 <= c <= 14
        centres.add(c)
        # the audio window follows the same centre; the volume gain is U(0.5, 1.5)
        v = s["audio"][0].double().numpy() * 32768
        gain = (v[-1] - v[0]) / (L - 1)
        assert 0.5 <= gain <= 1.5
        np.testing.assert_allclose(np.diff(v), gain, atol=5e-3)  # float32 rounding
        cs = ((2 * c - 1) * RATE) // (2 * FPS)
        assert round(v[0] / gain) == min(max(cs - L // 2, 0), 20000 - L)
    assert len(centres) > 3


def test_train_crop_and_flip_are_shared_by_all_frames(tmp_path):
    xs = np.arange(40)
    frames = [np.repeat(np.repeat((4 * xs + 10 * k)[None, :, None], 40, 0), 3, 2).astype(np.uint8)
              for k in range(1, 4)]
    row = write_clip(tmp_path, "alpha", "grad", frames, np.zeros(L, np.float32))
    ds = ramp_ds(tmp_path, [row], train=True, num_frames=3, img_size=32, frame_rate=FPS)
    flips, lefts = set(), set()
    for epoch in range(16):
        ds.set_epoch(epoch)
        v = ds[0]["visual"][0].mean(dim=1).numpy() * 255  # (T, W): the column profile of each frame
        np.testing.assert_allclose(v[1] - v[0], 10, atol=2.5)  # same crop in every frame
        np.testing.assert_allclose(v[2] - v[1], 10, atol=2.5)
        slope = (v[0, -1] - v[0, 0]) / 31
        assert abs(abs(slope) - 4 * 40 / 35) < 0.3, slope  # the 40 -> 35 px resize scales the slope
        flip = slope < 0
        flips.add(flip)
        lefts.add(int(round(v[0, -1] if flip else v[0, 0])))  # grey level of the crop's left edge
    assert flips == {True, False} and len(lefts) > 1


def test_large_frames_use_reduced_decoding_and_match_full_decode(tmp_path):
    assert T.decode_flag(480, 640, 70) == cv2.IMREAD_REDUCED_COLOR_4
    assert T.decode_flag(100, 100, 70) == cv2.IMREAD_COLOR
    assert T.decode_flag(300, 400, 35) == cv2.IMREAD_REDUCED_COLOR_8
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (31, 31), 8)
    row = write_clip(tmp_path, "alpha", "big", [big], np.zeros(L, np.float32))
    got = ramp_ds(tmp_path, [row])[0]["visual"]
    full = cv2.cvtColor(cv2.imread(str(tmp_path / "data/frames/alpha/big.mp4/000001.jpg")), cv2.COLOR_BGR2RGB)
    full = T.resize_short(full, 35)
    top, left, _ = T.center_crop_params(*full.shape[:2], 32)
    ref = torch.from_numpy(full[top:top + 32, left:left + 32]).permute(2, 0, 1).float() / 255
    assert got.shape == (3, 1, 32, 32)
    assert (got[:, 0] - ref).abs().mean() < 0.03


def _wav_bytes(samples: np.ndarray, rate: int, extra_chunk: bytes) -> bytes:
    """A hand-built PCM16 WAV with ``extra_chunk`` (e.g. ffmpeg's LIST) between fmt and data."""
    import struct

    data = samples.astype("<i2").tobytes()
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, 2 * rate, 2, 16)
    body = b"WAVE" + fmt + extra_chunk + struct.pack("<4sI", b"data", len(data)) + data
    return struct.pack("<4sI", b"RIFF", len(body)) + body


@pytest.mark.parametrize("kind", ["pcm16", "list_chunk", "pcm24", "float"])
def test_wav_reading_matches_soundfile(tmp_path, kind):
    rng = np.random.default_rng(3)
    ints = rng.integers(-32768, 32767, 9000, dtype=np.int64).astype(np.int16)
    row = ramp_clip(tmp_path, "alpha", "w", 16, 10)
    wav = tmp_path / "data/audio/alpha/w.wav"
    if kind == "list_chunk":  # odd-sized chunk, padded to even, as some writers do
        wav.write_bytes(_wav_bytes(ints, RATE, b"LIST\x05\x00\x00\x00INFOx\x00"))
    elif kind == "pcm16":
        sf.write(str(wav), ints, RATE, subtype="PCM_16")
    else:
        sf.write(str(wav), ints / 32768.0, RATE, subtype="PCM_24" if kind == "pcm24" else "FLOAT")
    ref = sf.read(str(wav), dtype="float32")[0]
    assert ref.shape == (9000,)
    for train in (False, True):
        ds = ramp_ds(tmp_path, [row], train=train, aud_len=L)
        full = ds._read_audio(ds.rows[0], None)
        np.testing.assert_array_equal(full, ref)
    centre = (15 * RATE) // (2 * FPS)
    np.testing.assert_array_equal(ramp_ds(tmp_path, [row])[0]["audio"][0].numpy(),
                                  ref[min(centre - L // 2, 9000 - L):][:L])


def test_truncated_wav_is_an_error(tmp_path):
    ds = _two_clip_ds(tmp_path)
    wav = tmp_path / "data/audio/beta/bad.wav"
    wav.write_bytes(wav.read_bytes()[:-100])
    with pytest.raises(MediaError, match=r"bad\.wav: unreadable audio \(truncated.*row 2"):
        ds[1]


# ----------------------------------------------------------------------------------------------- errors
def test_unknown_class_names_file_row_and_categories(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("/alpha/a.wav,/alpha/a.mp4,4\n\n/delta/d.wav,/delta/d.mp4,4\n")
    with pytest.raises(IndexFormatError, match=r"l\.csv, row 3: class 'delta'.*alpha, beta, gamma"):
        AVDataset(csv, tmp_path, tmp_path, CATS, False)


def test_rows_come_from_the_one_index_reader(media):
    """AVDataset reads its rows with dataset.index.read_index; the integer label is the class's position."""
    ds = make_ds(media)
    rows = index.read_index(media["train"], CATS)
    assert ds.rows == rows and [r.line for r in ds.rows] == [r.line for r in rows]
    assert ds.labels == [CATS.index(r.label) for r in rows]
    assert all(isinstance(r.label, str) for r in ds.rows)


@pytest.mark.parametrize("line, reason", [
    ("/alpha/a.wav,/alpha/a.mp4", "expected 3 fields"),
    ("/alpha/a.wav,/alpha/a.mp4,four", "not a positive integer"),
    ("/alpha/a.wav,/alpha/a.mp4,0", "not a positive integer"),
    ("alpha.wav,/alpha/a.mp4,3", "is not /<class>/<vid>.wav"),
    ("/alpha/a.wav,/beta/a.mp4,3", "different clips"),
])
def test_malformed_rows(tmp_path, line, reason):
    csv = tmp_path / "l.csv"
    csv.write_text("/alpha/a.wav,/alpha/a.mp4,4\n" + line + "\n")
    with pytest.raises(IndexFormatError, match=f"row 2: .*{reason}"):
        AVDataset(csv, tmp_path, tmp_path, CATS, False)


def test_bad_arguments(media):
    with pytest.raises(ValueError, match="img_size"):
        make_ds(media, img_size=0)
    with pytest.raises(ValueError, match="both"):
        build_loader(make_ds(media), 2, 0, shuffle=True, sampler=range(3))


def _two_clip_ds(tmp_path, **kw):
    rows = [ramp_clip(tmp_path, "alpha", "ok", 16, 20000), ramp_clip(tmp_path, "beta", "bad", 16, 20000)]
    return ramp_ds(tmp_path, rows, **kw)


def test_missing_frame_names_path_and_row(tmp_path):
    ds = _two_clip_ds(tmp_path)
    missing = tmp_path / "data/frames/beta/bad.mp4/000008.jpg"
    missing.unlink()
    with pytest.raises(MediaError, match=rf"{missing}: missing.*list\.csv, row 2"):
        ds[1]
    ds[0]  # the other clip still loads


def test_fewer_frames_on_disk_than_index(tmp_path):
    ds = _two_clip_ds(tmp_path)
    for k in range(13, 17):
        (tmp_path / f"data/frames/beta/bad.mp4/{k:06d}.jpg").unlink()
    with pytest.raises(MediaError, match=r"000016\.jpg: missing; the index says 16 frames.*holds 12.*row 2"):
        ds[1]
    with pytest.raises(MediaError, match=r"000016\.jpg: missing.*row 2"):  # preload checks at construction
        ramp_ds(tmp_path, [ramp_clip(tmp_path, "alpha", "ok", 16, 20000), "/beta/bad.wav,/beta/bad.mp4,16"],
                preload=True)


def test_unreadable_frame_and_audio(tmp_path):
    ds = _two_clip_ds(tmp_path)
    (tmp_path / "data/frames/beta/bad.mp4/000008.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MediaError, match=r"bad\.mp4/00000[18]\.jpg: unreadable.*row 2"):
        ds[1]
    ds = _two_clip_ds(tmp_path)
    (tmp_path / "data/audio/beta/bad.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(MediaError, match=r"bad\.wav: unreadable audio.*row 2"):
        ds[1]


def test_missing_audio_names_path_and_row(tmp_path):
    ds = _two_clip_ds(tmp_path)
    (tmp_path / "data/audio/beta/bad.wav").unlink()
    with pytest.raises(MediaError, match=r"beta/bad\.wav: missing audio.*row 2"):
        ds[1]


def test_wrong_sample_rate_is_an_error(tmp_path):
    rows = [ramp_clip(tmp_path, "alpha", "ok", 16, 20000), ramp_clip(tmp_path, "beta", "sr", 16, 20000, 16000)]
    ds = ramp_ds(tmp_path, rows)
    with pytest.raises(MediaError, match=r"beta/sr\.wav: sample rate 16000 Hz, expected 11025.*row 2"):
        ds[1]


def test_stereo_audio_is_an_error(tmp_path):
    ds = _two_clip_ds(tmp_path)
    sf.write(str(tmp_path / "data/audio/beta/bad.wav"), np.zeros((5000, 2), np.float32), RATE)
    with pytest.raises(MediaError, match=r"bad\.wav: 2 channels, expected mono.*row 2"):
        ds[1]


def test_clip_too_short_for_frame_window(tmp_path):
    ds = ramp_ds(tmp_path, [ramp_clip(tmp_path, "alpha", "tiny", 4, 20000)], num_frames=3, stride_frames=2)
    with pytest.raises(MediaError, match=r"tiny\.mp4: 4 frames cannot hold 3 frames with stride 2.*row 1"):
        ds[0]
    # the pre-flight check finds the same clip before any training step
    with pytest.raises(IndexFormatError, match=r"list\.csv, row 1: clip alpha/tiny has 4 frames.*needs 5"):
        index.check_clip_lengths(ds.rows, 3, 2)


@pytest.mark.parametrize("num_frames, stride", [(1, 1), (2, 1), (3, 2), (4, 3), (5, 2)])
def test_clip_length_check_matches_the_loader(tmp_path, num_frames, stride):
    """check_clip_lengths rejects exactly the clips whose window the loader cannot place (train and eval)."""
    needed = (num_frames - 1) * stride + 1
    for n in (needed - 1, needed):
        if n < 1:
            continue
        root = tmp_path / f"n{n}"
        ds = ramp_ds(root, [ramp_clip(root, "alpha", "c", n, 20000)], num_frames=num_frames, stride_frames=stride)
        try:
            index.check_clip_lengths(ds.rows, num_frames, stride)
            check_ok = True
        except IndexFormatError:
            check_ok = False
        loads = []
        for train in (False, True):
            ds.train = train
            try:
                ds[0]
                loads.append(True)
            except MediaError:
                loads.append(False)
        assert loads == [check_ok, check_ok] == [n >= needed] * 2, (num_frames, stride, n)


def test_fake_media_layout(tmp_path):
    p = make_fake_media(tmp_path, ["x", "y"], clips_per_class=4, num_frames=3, seconds=0.5, img_hw=(16, 20), seed=0)
    train = p["train"].read_text().splitlines()
    assert len(train) == 6 and p["val"].read_text() == p["test"].read_text()
    assert len(p["all"].read_text().splitlines()) == 8
    wav, rate = sf.read(str(p["audio_path"] / "x" / "vid000.wav"))
    assert rate == RATE and wav.shape == (5512,)  # round(0.5 * 11025)
    img = cv2.imread(str(p["frame_path"] / "y" / "vid003.mp4" / "000003.jpg"))
    assert img.shape == (16, 20, 3)
    assert train[0] == "/x/vid000.wav,/x/vid000.mp4,3"


# ------------------------------------------------------------------------------------------ training margin

def test_train_margin_keeps_centre_away_from_clip_ends():
    from dataset.specs import get_spec
    from dataset.windows import centre_range, middle_frame, train_centre_range

    fps = 8
    margin = round(get_spec("music").train_margin_s * fps)  # 3 s (docs/paper.md, Model)
    assert margin == 24 and get_spec("synthetic").train_margin_s == 0.0  # the embedded set keeps its window
    assert train_centre_range(80, 1, 1, margin) == (25, 56)  # a 10-s clip: 3 s kept at each end
    assert train_centre_range(80, 3, 8, margin) == (25, 56)
    assert train_centre_range(40, 1, 1, margin) == (20, 20) == (middle_frame(40, 1, 1),) * 2  # too short
    assert train_centre_range(80, 1, 1, 0) == centre_range(80, 1, 1)
    assert train_centre_range(2, 3, 8, margin) == centre_range(2, 3, 8)  # no window at all: left to the checks


# ------------------------------------------------------------------ raw transport (uint8 / int16 batches)
def _loud_clips(root: Path):
    """Four clips: loud 16-bit ones (the training volume clips them), one 32-bit float WAV, one quiet."""
    rng = np.random.default_rng(4)
    rows = []
    for j, (cls, amp) in enumerate([("alpha", 0.95), ("beta", 0.9), ("gamma", 0.8), ("alpha", 0.1)]):
        frames = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(8)]
        wave = (amp * np.sin(np.arange(12000) / 7.0)).astype(np.float32)
        rows.append(write_clip(root, cls, f"v{j}", frames, wave, RATE))
        if j == 2:
            sf.write(str(root / "data" / "audio" / cls / f"v{j}.wav"), wave, RATE, subtype="FLOAT")
    csv = root / "loud.csv"
    csv.write_text("".join(r + "\n" for r in rows))
    return csv


@pytest.mark.parametrize("train", [True, False])
def test_raw_transport_gives_the_float_path_bitwise(tmp_path, train):
    from dataset.batches import GAIN_KEY, frames_to_floats, to_model_floats

    csv = _loud_clips(tmp_path)

    def ds():
        return AVDataset(csv, tmp_path / "data" / "audio", tmp_path / "data" / "frames", CATS, train, num_frames=3,
                         stride_frames=2, frame_rate=FPS, aud_len=L, aud_rate=RATE, img_size=32, seed=5)

    old, raw = ds(), ds().set_transport(raw=True)
    assert raw[0]["audio"].dtype == torch.int16 and raw[2]["audio"].dtype == torch.float32  # FLOAT WAV
    clipped = 0
    for epoch in (1, 2, 3):
        old.set_epoch(epoch)
        raw.set_epoch(epoch)
        ref = next(iter(build_loader(old, batch_size=4, workers=0, shuffle=False)))
        batch = next(iter(build_loader(raw, batch_size=4, workers=0, shuffle=False)))
        assert batch["visual"].dtype == torch.uint8 and batch["visual"].shape == (4, 3, 32, 32, 3)
        assert batch["audio"].dtype == torch.float32  # mixed encodings: int16 ones scaled in collate
        assert (GAIN_KEY in batch) == train
        only16 = next(iter(build_loader(raw, batch_size=2, workers=0, shuffle=False)))
        assert only16["audio"].dtype == torch.int16
        got = to_model_floats(batch, torch.device("cpu"))
        assert GAIN_KEY not in got and got["visual"].is_contiguous()
        for key in ("visual", "audio"):
            assert got[key].dtype == ref[key].dtype and got[key].shape == ref[key].shape
            assert torch.equal(got[key], ref[key]), (key, epoch)
        assert torch.equal(to_model_floats(only16, torch.device("cpu"))["audio"], ref["audio"][:2])
        # the table gather used off the CPU gives the same bits as the CPU's division
        assert torch.equal(frames_to_floats(batch["visual"], use_table=True), ref["visual"])
        clipped += int((ref["audio"].abs() == 1.0).sum())
    assert clipped > 0 or not train  # the training volume's clamp was exercised


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_loader_on_cuda_gives_the_cpu_float_path(media):
    from dataset.batches import DeviceLoader

    old = make_ds(media, split="all", train=True, num_frames=3, stride_frames=2)
    raw = make_ds(media, split="all", train=True, num_frames=3, stride_frames=2).set_transport(raw=True)
    refs = list(build_loader(old, batch_size=4, workers=0, shuffle=False))
    gots = list(DeviceLoader(build_loader(raw, batch_size=4, workers=2, shuffle=False), torch.device("cuda")))
    assert len(refs) == len(gots)
    for ref, got in zip(refs, gots):
        for key in ("visual", "audio"):
            assert got[key].is_cuda and torch.equal(got[key].cpu(), ref[key]), key


def test_eval_crop_cache_gives_identical_batches(media, tmp_path):
    from dataset.crop_cache import open_crop_cache

    def ds(**kw):
        return make_ds(media, split="all", train=False, num_frames=3, stride_frames=2, **kw)

    folder = tmp_path / "crops"
    cache = open_crop_cache(ds(), folder, workers=0, batch_size=5)
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".u8")
    stamp = (folder / files[1]).stat().st_mtime_ns
    assert open_crop_cache(ds(), folder).shape == cache.shape == (len(ds()), 3, 32, 32, 3)
    assert (folder / files[1]).stat().st_mtime_ns == stamp  # opened, not rebuilt
    for raw in (True, False):
        plain = ds().set_transport(raw=raw)
        cached = ds().set_transport(raw=raw, crop_cache=cache)
        ref = list(build_loader(plain, batch_size=4, workers=0, shuffle=False))
        for workers in (0, 2):  # workers get the cache by path (pickled), not by content
            got = list(build_loader(cached, batch_size=4, workers=workers, shuffle=False))
            assert len(got) == len(ref)
            for a, b in zip(ref, got):
                assert torch.equal(a["visual"], b["visual"]) and torch.equal(a["audio"], b["audio"])
                assert a["visual"].dtype == (torch.uint8 if raw else torch.float32)
    train = make_ds(media, split="all", train=True, num_frames=3, stride_frames=2)
    train.set_transport(raw=True, crop_cache=cache)  # training crops are random: the cache is not read
    assert not torch.equal(train[0]["visual"], torch.from_numpy(cache[0]))
    open_crop_cache(ds(img_size=24), folder)  # other sizes: another file
    assert len(list(folder.iterdir())) == 4


@pytest.mark.parametrize("cores,local_world,workers", [(2, 1, 0), (1, 1, 0), (4, 1, 2), (16, 1, 14), (16, 2, 6),
                                                       (64, 8, 6), (64, 1, 16), (8, 16, 0)])
def test_default_workers_from_affinity_and_local_ranks(cores, local_world, workers, monkeypatch):
    from dataset.batches import default_workers

    assert default_workers(cores, local_world) == workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
        assert default_workers() == workers
