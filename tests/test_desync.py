"""The desynchronisation attack (attacks/desync.py) and the loader's audio context it reads.

Its own contract (its input carries ``audio_context``): audio out of the usual shape, the frames untouched
bit for bit, PGD's budget around the shifted window, batch independence, model mode restored; the worst shift
equals a brute-force loop; a model that uses the audio-visual offset loses to it and a shift-invariant one
does not; the loader's context has today's audio as its centre crop bit for bit and a clip without enough
context is refused (loader and pre-flight, naming the clip and the flag)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks import create_attack
from attacks.desync import crop_shift, shift_grid
from dataset.av_dataset import AVDataset
from dataset.errors import MediaError
from pipeline.config import get_args_parser, parse_config
from pipeline.preflight import check_audio_context
from tests.conftest import ToyAV
from utils.errors import UsageError

CATS = ["a", "b"]
MEDIA = dict(clips_per_class=2, num_frames=8, seconds=1.0, img_hw=(8, 8), seed=0)
RATE, L = 100, 48  # toy units: 100 samples per second, 48-sample windows


def context_batch(b: int = 5, shift: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ctx = (torch.randint(0, 2, (b, 1, L + 2 * shift), generator=gen).double() - 0.5)  # +-0.5 noise
    return ctx, crop_shift(ctx, shift, L, 0).clone()


class Offset(nn.Module):
    """Reads the audio-visual offset: class 0 iff the audio correlates with the visual signal at lag 0."""

    def forward(self, audio, visual):
        s = (audio.flatten(1) * (2 * visual.flatten(1) - 1)).mean(dim=1)  # 0.5 aligned, about 0 shifted
        return torch.stack([20 * (s - 0.25), -20 * (s - 0.25)], dim=1)


class Invariant(Offset):
    """The same data, read without the offset: the audio power (0.25 for any window of +-0.5 samples)."""

    def forward(self, audio, visual):
        s = 2 * (audio.flatten(1) ** 2).mean(dim=1)
        return torch.stack([20 * (s - 0.25), -20 * (s - 0.25)], dim=1)


def desync(model, max_shift: int = 10, step: int = 2, **kw):
    return create_attack("desync", model, eps=kw.pop("eps", {}), max_shift_s=max_shift / RATE,
                         shift_step_s=step / RATE, audio_rate=RATE, **kw)


def test_offset_model_loses_to_desync_and_shift_invariant_does_not():
    ctx, audio = context_batch(b=8)
    visual = (audio > 0).double().view(8, 1, 1, L)  # the visual signal carries the audio's timing
    labels = torch.zeros(8, dtype=torch.long)
    for model, fooled in ((Offset(), True), (Invariant(), False)):
        assert bool((model(audio=audio, visual=visual).argmax(1) == labels).all())  # clean: all correct
        attack = desync(model)
        adv = attack({"audio": audio, "visual": visual}, labels, audio_context=ctx)
        acc = float((model(audio=adv["audio"], visual=adv["visual"]).argmax(1) == labels).double().mean())
        assert acc == (0.0 if fooled else 1.0), (type(model).__name__, acc, attack.last_shifts)
        if not fooled:  # every shift ties: the smallest, 0, is kept and the audio is the very tensor
            assert adv["audio"] is audio and not bool(attack.last_shifts.any())


def test_worst_shift_is_the_brute_force_one():
    model = ToyAV(dtype=torch.float64, seed=3).eval()
    ctx, audio = context_batch(b=6, shift=7, seed=1)
    gen = torch.Generator().manual_seed(2)
    visual = torch.rand(6, 3, 6, 6, generator=gen, dtype=torch.float64)
    labels = torch.arange(6) % 4
    attack = desync(model, max_shift=7, step=3)
    assert shift_grid(7, 3) == [0, -3, 3, -6, 6, -7, 7]
    attack({"audio": audio, "visual": visual}, labels, audio_context=ctx)
    for i in range(6):
        best, best_loss = None, None
        for k in range(-7, 8):
            if k % 3 and abs(k) != 7:
                continue
            with torch.no_grad():
                loss = float(F.cross_entropy(model(audio=ctx[i:i + 1, :, 7 + k:7 + k + L], visual=visual[i:i + 1]),
                                             labels[i:i + 1]))
            if best is None or loss > best_loss or (loss == best_loss and (abs(k), k) < (abs(best), best)):
                best, best_loss = k, loss
        assert int(attack.last_shifts[i]) == best, (i, attack.last_shifts)


def test_contract_with_context():
    model = ToyAV(dtype=torch.float64, seed=4)
    model.train()
    flags = [m.training for m in model.modules()]
    ctx, audio = context_batch(b=5, shift=9, seed=3)
    visual = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    labels = torch.arange(5) % 4
    eps = 0.02
    attack = desync(model, max_shift=9, step=3, eps={"audio": eps}, steps=3)
    adv = attack({"audio": audio, "visual": visual}, labels, audio_context=ctx)
    assert [m.training for m in model.modules()] == flags
    assert adv["visual"] is visual and adv["audio"].shape == audio.shape
    shifted = crop_shift(ctx, 9, L, attack.last_shifts)
    assert float((adv["audio"] - shifted).abs().max()) <= eps + 1e-12
    assert adv["audio"].min() >= -1 and adv["audio"].max() <= 1
    alone = desync(model, max_shift=9, step=3, eps={"audio": eps}, steps=3)
    one = alone({"audio": audio[2:3], "visual": visual[2:3]}, labels[2:3], audio_context=ctx[2:3])
    assert int(alone.last_shifts[0]) == int(attack.last_shifts[2])
    torch.testing.assert_close(one["audio"][0], adv["audio"][2], atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="audio_context of shape"):
        attack({"audio": audio, "visual": visual}, labels)
    with pytest.raises(ValueError, match="another window"):
        attack({"audio": audio, "visual": visual}, labels, audio_context=torch.roll(ctx, 1, dims=2))


@pytest.mark.parametrize("raw", [True, False])
def test_context_centre_crop_is_todays_audio_bit_for_bit(media, raw):
    kw = dict(categories=CATS, split_train=False, num_frames=1, aud_len=4096, img_size=8)
    plain = AVDataset(media["test"], media["audio_path"], media["frame_path"], **kw).set_transport(raw=raw)
    wide = AVDataset(media["test"], media["audio_path"], media["frame_path"], **kw).set_transport(raw=raw)
    wide.set_audio_context(1000)
    for i in range(len(plain)):
        a, c = plain[i]["audio"], wide[i]["audio_context"]
        assert c.dtype == a.dtype and c.shape == (1, 4096 + 2000)
        assert torch.equal(c[:, 1000:1000 + 4096], a) and torch.equal(wide[i]["audio"], a)


def test_clip_ends_refused_by_loader_and_preflight(media):
    # 1 s clips at 11025 Hz, eval centre frame 4 of 8: the 4096-sample window starts at sample 2775, 4154 after it
    kw = dict(categories=CATS, split_train=False, num_frames=1, aud_len=4096, img_size=8)
    ds = AVDataset(media["test"], media["audio_path"], media["frame_path"], **kw).set_audio_context(2776)
    with pytest.raises(MediaError, match=r"clip a/vid001: .* 2775 before"):
        ds[0]
    cfg = SimpleNamespace(mode="eval", attacks=["desync"], max_shift_s=2776 / 11025, audRate=11025,
                          audio_path=str(media["audio_path"]), categories=CATS, num_frames=1, stride_frames=1,
                          frameRate=8, audLen=4096, list_test=str(media["test"]))
    with pytest.raises(UsageError, match=r"largest --max_shift_s for this list is 0\.251 s") as err:
        check_audio_context(cfg, "list_test")
    assert err.value.flag == "--max_shift_s"
    cfg.max_shift_s = 2775 / 11025
    check_audio_context(cfg, "list_test")  # exactly the room there is: accepted


@pytest.mark.parametrize("extra, flag", [(["--max_shift_s", "-0.1"], "--max_shift_s"),
                                         (["--shift_step_s", "0"], "--shift_step_s"),
                                         (["--attack_type", "pgd", "--max_shift_s", "0.1"], "--max_shift_s")])
def test_bad_shift_flags_name_the_flag(extra, flag):
    base = ["--list_test", "t.csv", "--mode", "eval", "--attack_type", "desync"]
    with pytest.raises(UsageError) as err:
        parse_config(get_args_parser(), base + extra)
    assert err.value.flag == flag
