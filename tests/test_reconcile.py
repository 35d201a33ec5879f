"""Official splits reconciled with local media (make_index.py --splits_from a folder of reference CSVs), and
the training pre-flight that refuses an index that does not match the media."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

import main_attack
from dataset import index
from dataset.reconcile import check_media, resolve_overlaps
from tests.fake_media import write_clip
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
MAKE_INDEX = str(REPO / "scripts" / "make_index.py")


def _clip(root: Path, cls: str, vid: str, n: int = 5) -> None:
    frames = [np.full((8, 8, 3), 40 * k % 255, np.uint8) for k in range(n)]
    write_clip(root, cls, vid, frames, np.zeros(4000, np.float32))


def _reference_csvs(folder: Path, rows: dict) -> None:
    """Index CSVs in the reference's format, with the authors' frame counts (82)."""
    folder.mkdir(parents=True)
    for split, clips in rows.items():
        (folder / f"{split}.csv").write_text("".join(f"/{c}.wav,/{c}.mp4,82\n" for c in clips))


def test_splits_from_reference_csvs_keep_official_split_and_report(tmp_path: Path) -> None:
    root = tmp_path / "media"
    for c in ["flute/-a1", "flute/a2", "tuba/b1", "tuba/b2", "tuba/b3", "flute/a4"]:
        _clip(root, *c.split("/"))
    (root / "data" / "audio" / "tuba" / "b3.wav").write_bytes(b"RIFF broken")  # unreadable audio
    _clip(root, "flute", "extra")  # on disk but in no list
    ref = tmp_path / "ref"
    _reference_csvs(ref, {"train": ["flute/-a1", "tuba/b1", "flute/gone", "flute/a4"],
                          "val": ["flute/a2", "tuba/b3"], "test": ["tuba/b2", "flute/a4"]})
    out = tmp_path / "idx"
    proc = subprocess.run([sys.executable, MAKE_INDEX, "--root", str(root), "--out", str(out), "--splits_from",
                           str(ref)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = {s: [(r.clip_id, r.num_frames) for r in index.read_index(out / f"{s}.csv")] for s in index.SPLITS}
    assert got == {"train": [("flute/-a1", 5), ("tuba/b1", 5)], "val": [("flute/a2", 5)],
                   "test": [("tuba/b2", 5), ("flute/a4", 5)]}  # official split, frames recounted (82 -> 5)
    with open(out / "excluded.csv", newline="") as f:
        excluded = {r["clip_id"]: r["reason"] for r in csv.DictReader(f)}
    assert "no audio and no frames on disk" in excluded["flute/gone"] and excluded["flute/gone"].startswith("train")
    assert excluded["tuba/b3"].startswith("val: b3.wav")  # unreadable, with the reason the scan found
    assert "kept in test" in excluded["flute/a4"] and "in no split list" in excluded["flute/extra"]
    assert "2 classes; train 2, val 1, test 2; 4 clips left out" in proc.stdout
    assert "5 kept clips have a frame count other than the source's" in proc.stdout


def test_splits_from_folder_without_lists_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "media"
    _clip(root, "flute", "a")
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "train.csv").write_text("/flute/a.wav,/flute/a.mp4,5\n")
    proc = subprocess.run([sys.executable, MAKE_INDEX, "--root", str(root), "--out", str(tmp_path / "o"),
                           "--splits_from", str(tmp_path / "ref")], capture_output=True, text=True)
    assert proc.returncode == 2 and "error: --splits_from" in proc.stderr and "val.csv, test.csv" in proc.stderr


def test_resolve_overlaps_rule() -> None:
    ids, dropped = resolve_overlaps({"train": ["a/1", "a/2", "a/2", "a/3"], "val": ["a/3"], "test": ["a/1"]})
    assert ids == {"train": ["a/2"], "val": ["a/3"], "test": ["a/1"]}
    assert sorted(e.clip_id for e in dropped) == ["a/1", "a/2", "a/3"]


def test_check_media_counts_without_decoding(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _clip(root, "flute", "a", n=4)
    rows = [index.IndexRow("flute", "a", 4, 1), index.IndexRow("flute", "a", 82, 2), index.IndexRow("tuba", "x", 3, 3)]
    problems = check_media(rows, root / "data" / "audio", root / "data" / "frames")
    assert problems == ["flute/a (row 2): 4 frames on disk, the index says 82", "tuba/x (row 3): no frame folder"]
    (root / "data" / "audio" / "flute" / "a.wav").unlink()
    assert check_media(rows[:1], root / "data" / "audio", root / "data" / "frames") == ["flute/a (row 1): no audio file"]


def test_training_on_shipped_music_csvs_against_other_media_fails_before_any_step(tmp_path, capsys) -> None:
    """The shipped MUSIC CSVs carry the authors' frame counts; local media of the same clips differ."""
    root = tmp_path / "media"
    for split in index.SPLITS:
        for r in index.read_index(REPO / "data" / "music" / f"{split}.csv")[:2]:
            _clip(root, r.label, r.vid, n=6)
    first = index.read_index(REPO / "data" / "music" / "train.csv")[0]
    ckpt = tmp_path / "runs"
    code = run_cli(main_attack.main, ["--dataset", "music", "--audio_path", str(root / "data" / "audio"),
                                      "--frame_path", str(root / "data" / "frames"), "--ckpt", str(ckpt),
                                      "--workers", "0", "--num_epoch", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --list_train")
    assert f"{first.clip_id} (row 1): 6 frames on disk, the index says {first.num_frames}" in err[0]
    assert f"make_index.py --root {root} --out <new folder> --splits_from {REPO / 'data' / 'music'}" in err[0]
    assert not ckpt.exists()  # refused before anything was written
