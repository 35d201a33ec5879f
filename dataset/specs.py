"""Dataset specifications: categories and paper defaults, registered by name.

Every number below comes from the paper's reference settings (docs/paper.md; each comment names the
section) unless the comment says otherwise. Index CSVs live in ``data/<name>/{train,val,test}.csv``; media
(frames, audio) live under a root given by the ``DATA_ROOT`` environment variable or
``--audio_path``/``--frame_path``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Tuple

from utils.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything a run needs to know about a dataset before reading any file."""

    name: str
    categories: Tuple[str, ...]
    fps: int = 8  # frames extracted at 8 fps (docs/paper.md, Preprocessing and layout)
    audio_rate: int = 11025  # mono WAV at 11025 Hz (docs/paper.md, Preprocessing and layout)
    audio_len: int = 65535  # ~5.9 s of audio centred on the frame (docs/paper.md, Model)
    img_size: int = 224  # ResNet input (docs/paper.md, Model)
    num_epoch: int = 30  # AVE/KS: 30 epochs (docs/paper.md, Model)
    lr_steps: Tuple[int, ...] = (10, 20)  # AVE/KS lr steps (docs/paper.md, Model)
    minsim_weight: float = 1.0  # MinSim w = 1.0 (docs/paper.md, Defense; 0.8 for KS)
    mix: float = 0.5  # memory-bank mix m = 0.5 (docs/paper.md, Defense; 0.6 for KS)
    alpha_audio: float = 7e-7  # ISTA step for the audio bank (docs/paper.md, Defense; per dataset)
    alpha_visual: float = 2e-6  # ISTA step for the visual bank (docs/paper.md, Defense; per dataset)
    # training centre at least this far from the clip ends when the clip allows it, else the middle
    # (docs/paper.md, Model: the reference keeps the centre frame 3 s from both ends)
    train_margin_s: float = 3.0
    default_root: str = ""  # where media live when DATA_ROOT is unset (relative to the repo)
    index_dir: str = ""  # where train/val/test.csv live (relative to the repo)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def root(self) -> Path:
        """Media root: $DATA_ROOT if set, else the spec's default under the repo; ``ValueError`` for a spec
        without one (``custom``)."""
        env = os.environ.get("DATA_ROOT")
        if env:
            return Path(env)
        if not self.default_root:
            raise ValueError(f"--dataset {self.name} has no default media root: set DATA_ROOT or give "
                             "--audio_path and --frame_path")
        return REPO_ROOT / self.default_root

    def audio_path(self) -> Path:
        return self.root() / "data" / "audio"

    def frame_path(self) -> Path:
        return self.root() / "data" / "frames"

    def list_path(self, split: str) -> Path:
        """Path of the index CSV of ``split`` (train, val or test); ``ValueError`` for a spec without shipped
        lists (``custom``)."""
        if not self.index_dir:
            raise ValueError(f"--dataset {self.name} has no shipped lists: give --list_train, --list_val and "
                             "--list_test (scripts/make_index.py builds them)")
        return REPO_ROOT / self.index_dir / f"{split}.csv"


DATASETS: Registry[Callable[[], DatasetSpec]] = Registry("dataset")
CUSTOM = "custom"  # a dataset of the user's own: its classes come from --categories (see _custom below)


def get_spec(name: str) -> DatasetSpec:
    """Build the spec registered as ``name`` (unknown names list the valid ones)."""
    return DATASETS.get(name)()


def list_datasets() -> List[str]:
    """Every registered spec, ``custom`` (a dataset of the user's own) included."""
    return DATASETS.names()


def named_datasets() -> List[str]:
    """The specs with a class list of their own (every one but ``custom``)."""
    return [n for n in DATASETS.names() if get_spec(n).categories]


@DATASETS.register("music")
def _music() -> DatasetSpec:
    return DatasetSpec(
        name="music",
        # MUSIC solo, 11 instruments, order of the paper's list (docs/paper.md, Datasets)
        categories=("flute", "acoustic_guitar", "accordion", "xylophone", "erhu", "tuba", "saxophone",
                    "cello", "violin", "clarinet", "trumpet"),
        num_epoch=100, lr_steps=(30, 60, 90),  # MUSIC: 100 epochs, steps 30 60 90 (docs/paper.md, Model)
        alpha_audio=1e-6, alpha_visual=6e-6,  # MUSIC ISTA steps (docs/paper.md, Defense)
        default_root="media/music", index_dir="data/music",
    )


@DATASETS.register("music21")
def _music21() -> DatasetSpec:
    return DatasetSpec(
        name="music21",
        # MUSIC-21 solo: the 11 MUSIC instruments, then the 10 added ones, spelled as the keys of
        # MUSIC21_solo_videos.json (github.com/roudimit/MUSIC_dataset, "version": 2.0). Not in the paper: it
        # trains with the MUSIC settings below (docs/paper.md, Model and Defense).
        categories=("flute", "acoustic_guitar", "accordion", "xylophone", "erhu", "tuba", "saxophone",
                    "cello", "violin", "clarinet", "trumpet",
                    "bagpipe", "banjo", "bassoon", "congas", "drum", "electric_bass", "guzheng", "piano", "pipa",
                    "ukulele"),
        num_epoch=100, lr_steps=(30, 60, 90),  # MUSIC: 100 epochs, steps 30 60 90 (docs/paper.md, Model)
        alpha_audio=1e-6, alpha_visual=6e-6,  # MUSIC ISTA steps (docs/paper.md, Defense)
        # no shipped split: build data/music21 (or any folder) with make_index.py and pass --list_*
        default_root="media/music21", index_dir="data/music21",
    )


@DATASETS.register("ave")
def _ave() -> DatasetSpec:
    return DatasetSpec(
        name="ave",
        categories=("Church_bell", "Male_speech", "Bark", "airplane", "Race_car", "Female_speech",
                    "Helicopter", "Violin", "Flute", "Ukulele", "Frying", "Truck", "Shofar", "Motorcycle",
                    "Chainsaw", "Acoustic_guitar", "Train_horn", "Clock", "Banjo", "Goat", "Baby_cry", "Bus",
                    "Cat", "Horse", "Toilet_flush", "Rodents", "Accordion", "Mandolin"),
        alpha_audio=7e-7, alpha_visual=2e-6,  # AVE ISTA steps (docs/paper.md, Defense)
        default_root="media/ave", index_dir="data/ave",
    )


@DATASETS.register("kinetics_sounds")
def _kinetics_sounds() -> DatasetSpec:
    return DatasetSpec(
        name="kinetics_sounds",
        categories=("laughing", "playing_clarinet", "singing", "playing_harmonica", "playing_keyboard",
                    "playing_xylophone", "playing_bass_guitar", "tapping_guitar", "playing_drums",
                    "playing_piano", "ripping_paper", "playing_saxophone", "tickling", "playing_trumpet",
                    "tapping_pen", "playing_organ", "tap_dancing", "playing_accordion", "blowing_nose",
                    "shuffling_cards", "playing_guitar", "playing_trombone", "playing_bagpipes",
                    "shoveling_snow", "bowling", "playing_violin", "chopping_wood"),
        minsim_weight=0.8, mix=0.6,  # KS: w = 0.8, m = 0.6 (docs/paper.md, Defense)
        alpha_audio=5.8e-7, alpha_visual=2e-6,  # KS ISTA steps (docs/paper.md, Defense)
        default_root="media/kinetics_sounds", index_dir="data/kinetics_sounds",
    )


@DATASETS.register("synthetic")
def _synthetic() -> DatasetSpec:
    # The embedded dataset (scripts/make_synthetic_dataset.py). Not from the paper: sizes are chosen so that
    # the whole study runs on a 2-core CPU in minutes (0.74 s of audio, 32 px frames, few epochs).
    from dataset.synthetic import SYNTHETIC_CATEGORIES

    return DatasetSpec(
        name="synthetic",
        categories=tuple(SYNTHETIC_CATEGORIES),
        audio_len=8192,  # ~0.74 s at 11025 Hz, at least one note of the melody (CPU budget, not a paper value)
        img_size=32,  # the class glyph fills about half of it (dataset/synthetic.py); CPU budget, not a paper value
        num_epoch=8, lr_steps=(6,),  # CPU budget, not a paper value
        train_margin_s=0.0,  # 2-s clips: the whole clip (a 3-s margin would pin every clip's middle)
        alpha_audio=1e-6, alpha_visual=6e-6,  # MUSIC's ISTA steps (closest paper setting: small, clean set)
        default_root="media/synthetic", index_dir="data/synthetic",
    )


@DATASETS.register(CUSTOM)
def _custom() -> DatasetSpec:
    # A dataset of the user's own (classes in no spec above, given by --categories): the paper's generic
    # settings, the DatasetSpec defaults: 65535 audio samples and 224 px frames (docs/paper.md, Model), 30
    # epochs with lr steps at 10 and 20 (docs/paper.md, Model: AVE and Kinetics-Sounds), MinSim w = 1.0 and
    # mix m = 0.5 (docs/paper.md, Defense), AVE's ISTA steps (docs/paper.md, Defense; the paper gives no
    # dataset-free value) and the 3-s training margin (docs/paper.md, Model). It has no shipped lists and no
    # media root: --list_* and --audio_path/--frame_path (or DATA_ROOT) are required (pipeline/config.py).
    return DatasetSpec(name=CUSTOM, categories=())
