"""Per-clip records of the new evaluation kinds and what the report and the examples page make of them:

- missing_per_sample.json / corruption_per_sample.json (reporting/per_sample.py ``per_clip/1``): round trip,
  refused where a per_sample.json is expected, and the sections' paired readings on hand-made clips whose
  discordant counts and exact McNemar p-values are worked out by hand below;
- attack_choices.json (reporting/attack_choices.py): desync's shift and sparse_time's perturbed segments per
  clip, recorded from the grid, equal to what the attacks actually did to each clip's input;
- the examples page names the perturbed frames and the shift (and still has the audio to listen to), and
  passes the headless-browser check.
"""
from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch
import torch.nn as nn

from attacks.desync import crop_shift
from attacks.evaluate import evaluate_attack_grid
from pipeline.attack_eval import ExampleCollector
from pipeline.sections.corruptions import Corruptions, reading_severity
from pipeline.sections.missing_input import MissingSection
from reporting.attack_choices import ChoiceCollector, read_choices, write_choices
from reporting.examples_page import write_examples_page
from reporting.per_sample import (CORRUPTION_CLEAN, CORRUPTION_KEYS, MISSING_KEYS, read_per_clip, read_per_sample,
                                  write_per_clip)
from tests.conftest import ToyAV
from utils.errors import MalformedFileError

N = 20  # clips of the hand-made evaluations


def right(*ranges: range) -> Dict[int, bool]:
    """Per-clip correctness of N clips: right on the given index ranges, wrong elsewhere."""
    ok = {i for r in ranges for i in r}
    return {i: i in ok for i in range(N)}


def test_per_clip_file_round_trip_and_refusals(tmp_path):
    table = {("audio", "zeros"): right(range(5)), ("none", "-"): right(range(N))}
    path = write_per_clip(table, MISSING_KEYS, tmp_path / "m.json")
    assert read_per_clip(path, MISSING_KEYS) == table
    with pytest.raises(MalformedFileError, match="keyed by"):
        read_per_clip(path, CORRUPTION_KEYS)
    with pytest.raises(MalformedFileError, match="per_sample/1"):  # a per_sample.json reader refuses it
        read_per_sample(path)
    sev = {("jpeg", 3): right(range(2)), CORRUPTION_CLEAN: right(range(N))}
    assert read_per_clip(write_per_clip(sev, CORRUPTION_KEYS, tmp_path / "c.json"), CORRUPTION_KEYS) == sev


class View:
    """A study of seeds 0 and 1: concat's missing-input evaluations, its corruption evaluations and the unimodal
    models' main evaluations (clean row only), from the tables given."""

    fusions = ("concat",)

    def __init__(self, missing: Dict[int, Dict[tuple, Dict[int, bool]]], uni: Dict[str, Dict[int, Dict[int, bool]]],
                 corrupt: Dict[int, Dict[tuple, Dict[int, bool]]] = None) -> None:
        self.missing, self.uni, self.corrupt = missing, uni, corrupt or {}

    def model_seeds(self, model: str) -> List[int]:
        return [0, 1] if model in ("concat", *self.uni) else []

    def kind_results(self, model, kind, seed=None, name="results") -> List[Dict[str, Any]]:
        if model != "concat":
            return []
        if kind == "missing" and name == "missing":
            return [{"missing_input": m, "missing_fill": f, "clean_acc": 1.0, "missing_acc": _acc(c), "n_samples": N}
                    for (m, f), c in self.missing[seed].items()]
        if kind == "corruptions" and name == "corruptions":
            return [{"corruption": c, "corruption_modality": {"jpeg": "visual", "mp3": "audio"}[c], "severity": s,
                     "clean_acc": _acc(t[CORRUPTION_CLEAN]), "corrupt_acc": _acc(ok), "n_samples": N}
                    for (c, s), ok in self.corrupt[seed].items() if c != "none" for t in [self.corrupt[seed]]]
        return []

    def kind_per_clip(self, model, kind, name, keys, seed=None):
        assert model == "concat"
        if kind == "missing":
            assert (name, tuple(keys)) == ("missing_per_sample", MISSING_KEYS)
            return self.missing[seed]
        assert (kind, name, tuple(keys)) == ("corruptions", "corruption_per_sample", CORRUPTION_KEYS)
        return self.corrupt[seed]

    def results(self, model, name="results", surface=False, seed=None):
        return [{"attack": "pgd", "eps_audio": 0.0, "eps_visual": 0.0, "clean_acc": _acc(self.uni[model][seed]),
                 "adv_acc": _acc(self.uni[model][seed]), "n_samples": N}]

    def per_sample(self, model, surface=False, seed=None):
        return {("pgd", 0.0, 0.0): self.uni[model][seed]}


def _acc(clips: Dict[int, bool]) -> float:
    return sum(clips.values()) / len(clips)


def test_missing_reading_pairs_each_absent_input_with_the_unimodal_model_of_the_other():
    # concat without audio vs the visual model (right on all 20 clips, both seeds):
    #   seed 0: concat right on 0-9 -> b (concat right, visual wrong) 0, c 10: p = 2 / 2^10 = 0.00195 -> lower
    #   seed 1: concat right on 0-16 -> b 0, c 3: p = 2 / 2^3 = 0.25 -> no difference: not consistent
    # concat without visual vs the audio model (right on 0-4): b 15, c 0 in both seeds: p = 2 / 2^15 -> higher
    missing = {0: {("none", "-"): right(range(N)), ("audio", "zeros"): right(range(10)),
                   ("visual", "zeros"): right(range(N))},
               1: {("none", "-"): right(range(N)), ("audio", "zeros"): right(range(17)),
                   ("visual", "zeros"): right(range(N))}}
    uni = {"visual": {0: right(range(N)), 1: right(range(N))}, "audio": {0: right(range(5)), 1: right(range(5))}}
    blocks = MissingSection().report(View(missing, uni))
    text = [b.text for b in blocks if b.kind == "p"]
    (no_audio,) = [t for t in text if t.startswith("Concat with its audio absent")]
    assert "keeps 67.5% (range 50.0-85.0: 50.0, 85.0), the visual model alone 100.0% (range 100.0-100.0" in no_audio
    assert ("concat without audio is not consistently different from the visual model: lower in 1 of 2 seeds, no "
            "difference at p < 0.05 in 1") in no_audio
    assert "seed 0 0 vs 10 discordant, p = 0.002; seed 1 0 vs 3 discordant, p = 0.25" in no_audio
    (no_visual,) = [t for t in text if t.startswith("Concat with its visual absent")]
    assert "concat without visual is higher than the audio model (higher in 2 of 2 seeds, each p < 0.05;" in no_visual
    assert "seed 0 15 vs 0 discordant, p < 0.001; seed 1 15 vs 0 discordant, p < 0.001" in no_visual
    assert any(t.startswith("2 paired comparisons were made") for t in text)


def test_corruption_reading_tests_concat_under_each_corruption_against_clean():
    # severity 3 (the middle one run); clean right on every clip.
    #   jpeg: seed 0 right on 0-1 -> c 18, p = 2 / 2^18; seed 1 right on 0-9 -> c 10, p = 0.00195: lower in both
    #   mp3: seed 0 right on 0-18 -> c 1, p = 1; seed 1 right on all -> no discordant clip, p = 1: the same
    corrupt = {0: {CORRUPTION_CLEAN: right(range(N)), ("jpeg", 1): right(range(N)), ("jpeg", 3): right(range(2)),
                   ("mp3", 1): right(range(N)), ("mp3", 3): right(range(19))},
               1: {CORRUPTION_CLEAN: right(range(N)), ("jpeg", 1): right(range(N)), ("jpeg", 3): right(range(10)),
                   ("mp3", 1): right(range(N)), ("mp3", 3): right(range(N))}}
    view = View({}, {}, corrupt)
    blocks = Corruptions().readings(view)
    assert blocks[0].text.startswith("Is concat hurt by each corruption? Its accuracy under each corruption at "
                                     "severity 3")
    assert "1 of 1 visual corruption(s) lower its accuracy in every seed (jpeg)" in blocks[0].text
    assert "0 of 1 audio corruption(s) lower its accuracy in every seed." in blocks[0].text
    rows = {r["corruption"]: r for r in blocks[1].table.rows}
    assert rows["jpeg"]["acc"] == "30.0% (range 10.0-50.0: 10.0, 50.0)"
    assert rows["jpeg"]["reading"].startswith("corrupted is lower than clean (lower in 2 of 2 seeds, each p < 0.05;")
    assert "seed 0 0 vs 18 discordant, p < 0.001; seed 1 0 vs 10 discordant, p = 0.002" in rows["jpeg"]["reading"]
    assert rows["mp3"]["reading"].startswith("corrupted is about the same as clean (no seed's test gives p < 0.05;")
    assert "seed 0 0 vs 1 discordant, p = 1; seed 1 0 vs 0 discordant, p = 1" in rows["mp3"]["reading"]
    assert blocks[2].text.startswith("2 paired comparisons were made")
    assert [reading_severity(r) for r in ([1, 3, 5], [1, 2], [2, 4, 5], [5])] == [3, 1, 4, 5]


class Offset(nn.Module):
    """Class 0 iff the audio correlates with the frames' pixels at lag 0 (tests/test_desync.py's model, with the
    48 audio samples laid out as a 3 x 4 x 4 frame)."""

    def forward(self, audio, visual):
        s = (audio.flatten(1) * (2 * visual.flatten(1) - 1)).mean(dim=1)
        return torch.stack([20 * (s - 0.25), -20 * (s - 0.25)], dim=1)


def _page_text(examples, tmp_path, title):
    index = write_examples_page(examples, tmp_path / "examples", title)
    return index, index.read_text(encoding="utf-8")


def test_desync_shifts_are_recorded_per_clip_and_shown_on_the_examples_page(tmp_path):
    rate, length, shift = 100, 48, 10
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, 2, (6, 1, length + 2 * shift), generator=gen).double() - 0.5
    audio = crop_shift(ctx, shift, length, 0).clone()
    visual = (audio > 0).double().view(6, 3, 4, 4)
    batches = [{"audio": audio[:4], "visual": visual[:4], "audio_context": ctx[:4], "label": torch.zeros(4).long(),
                "index": torch.arange(4), "id": [f"a/{i}" for i in range(4)]},
               {"audio": audio[4:], "visual": visual[4:], "audio_context": ctx[4:], "label": torch.zeros(2).long(),
                "index": torch.arange(4, 6), "id": ["a/4", "a/5"]}]
    model = Offset()
    choices = ChoiceCollector()
    examples = ExampleCollector(model, ["zero", "one"], 2, "desync", (), rate, seed=0)
    applied: Dict[int, torch.Tensor] = {}

    def on_batch(info):
        choices(info)
        examples(info)
        for j, i in enumerate(info["batch"]["index"].tolist()):
            applied[i] = info["adv"]["audio"][j]

    rows = evaluate_attack_grid(model, batches, ["desync"], [{}], "cpu", progress=False, on_batch=on_batch,
                                attack_options={"desync": {"max_shift_s": shift / rate, "shift_step_s": 2 / rate,
                                                           "audio_rate": rate}})
    assert rows[0]["adv_acc"] == 0.0  # the offset model loses every clip to the shift
    choices.summarise(rows)
    (rec,) = read_choices(write_choices(choices, tmp_path / "attack_choices.json")).values()
    assert sorted(rec["shift_s"]) == list(range(6))
    for i, s in rec["shift_s"].items():  # the recorded shift is the one applied to that clip's audio
        k = round(s * rate)
        assert k != 0 and torch.equal(applied[i], crop_shift(ctx[i:i + 1], shift, length, k)[0])
    assert sum(rec["histogram_s"].values()) == 6
    mean_abs = sum(abs(s) for s in rec["shift_s"].values()) / 6
    assert rows[0]["mean_abs_shift_s"] == pytest.approx(mean_abs) == rec["mean_abs_shift_s"]
    assert rows[0]["shifted_share"] == 1.0
    chosen = examples.examples
    assert chosen and all(ex["shift_s"] == rec["shift_s"][int(ex["id"][2:])] for ex in chosen)
    _, page = _page_text(chosen, tmp_path, "desync")
    s0 = chosen[0]["shift_s"]
    side = "audio ahead of the frames" if s0 > 0 else "audio behind the frames"
    assert f"{s0:+.3f} s ({side})" in page and page.count("<audio controls") == 2 * len(chosen)


def test_sparse_time_support_is_recorded_per_clip_and_shown_on_the_examples_page(tmp_path):
    torch.manual_seed(0)
    model = ToyAV(num_classes=2, dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(1)
    b, t = 6, 4
    audio = torch.rand(b, 1, 48, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    visual = torch.rand(b, 3, t, 6, 6, generator=gen, dtype=torch.float64) * 0.6 + 0.2
    with torch.no_grad():
        labels = model(audio=audio, visual=visual).argmax(1)  # every clip right on clean
    batches = [{"audio": audio[s], "visual": visual[s], "label": labels[s], "index": torch.arange(6)[s],
                "id": [f"c/{i}" for i in range(6)[s]]} for s in (slice(0, 3), slice(3, 6))]
    choices = ChoiceCollector()
    examples = ExampleCollector(model, ["zero", "one"], 4, "sparse_time", ("audio", "visual"), 11025, seed=0)
    changed: Dict[int, Dict[str, List[int]]] = {}

    def on_batch(info):
        choices(info)
        examples(info)
        for j, i in enumerate(info["batch"]["index"].tolist()):
            d_v = (info["adv"]["visual"][j] - info["inputs"]["visual"][j]).abs().amax(dim=(0, 2, 3))
            d_a = (info["adv"]["audio"][j] - info["inputs"]["audio"][j]).abs().view(t, -1).amax(dim=1)
            changed[i] = {"audio": d_a.nonzero().flatten().tolist(), "visual": d_v.nonzero().flatten().tolist()}

    eps = {"audio": 0.05, "visual": 0.1}
    rows = evaluate_attack_grid(model, batches, ["sparse_time"], [eps], "cpu", steps=3, progress=False,
                                on_batch=on_batch, attack_options={"sparse_time": {"frames": 1}})
    choices.summarise(rows)
    (rec,) = read_choices(write_choices(choices, tmp_path / "attack_choices.json")).values()
    assert rec["segments"] == {"audio": t, "visual": t} and sorted(rec["support"]) == list(range(6))
    for i, chosen in rec["support"].items():  # one segment per modality, the one whose input changed
        assert chosen == changed[i] and all(len(v) == 1 for v in chosen.values()), (i, chosen, changed[i])
    for m in ("audio", "visual"):
        assert sum(rec["counts"][m]) == 6
    assert rows[0]["segments_chosen"] == "; ".join(f"{m} " + "/".join(map(str, rec["counts"][m]))
                                                   for m in ("audio", "visual"))
    chosen = examples.examples
    assert chosen
    _, page = _page_text(chosen, tmp_path, "sparse_time")
    for ex in chosen:
        frame = rec["support"][int(ex["id"][2:])]["visual"][0]
        assert ex["segments"]["visual"] == [frame] and ex["frame_index"] == frame  # the perturbed frame is shown
        assert f"adversarial frame (frame {frame} of {t})" in page
    first = rec["support"][int(chosen[0]["id"][2:])]
    assert f"{first['visual'][0]} of {t} (numbered from 0)" in page and "perturbed audio segments" in page
    assert page.count('class="seg hit"') == 2 * len(chosen)  # one marked frame and one audio segment per example
    assert page.count("<audio controls") == 2 * len(chosen)


def test_examples_page_refuses_segments_without_their_count(tmp_path):
    ex = {"label": "a", "pred_clean": "a", "pred_adv": "b", "frame_clean": torch.zeros(3, 4, 4),
          "frame_adv": torch.zeros(3, 4, 4), "segments": {"visual": [5]}, "num_segments": 4}
    with pytest.raises(ValueError, match=r"visual segments \[5\] outside 0..3"):
        write_examples_page([ex], tmp_path, "bad")
    with pytest.raises(ValueError, match="needs 'num_segments'"):
        write_examples_page([{**ex, "num_segments": None}], tmp_path, "bad")


def test_time_attack_examples_page_passes_the_browser_check(tmp_path):
    from tests.test_browser import CHROMIUM, check
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs it as root)")
    frame = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    wave = torch.linspace(-0.5, 0.5, 1100)
    ex = {"id": "c/1", "label": "a", "pred_clean": "a", "pred_adv": "b", "frame_clean": frame,
          "frame_adv": (frame + 0.01).clamp(0, 1), "audio_clean": wave, "audio_adv": wave.flip(0), "sample_rate": 11025,
          "segments": {"audio": [1], "visual": [2]}, "num_segments": 4, "frame_index": 2, "num_frames": 4,
          "shift_s": -0.05}
    index, page = _page_text([ex], tmp_path, "sparse_time and desync")
    assert "-0.050 s (audio behind the frames)" in page and "2 of 4 (numbered from 0)" in page
    proc = check(index)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 audio" in proc.stdout
