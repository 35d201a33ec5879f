"""Index CSVs: reader errors, leakage checks (reference AVE numbers), and split building from media."""
from __future__ import annotations

import csv
import subprocess
import sys
import wave
from collections import Counter
from pathlib import Path

import pytest

from dataset import index
from dataset.index import IndexFormatError, IndexRow
from dataset.specs import get_spec

REPO = Path(__file__).resolve().parents[1]
# the reference splits as shipped in data/ (byte copies of ../shared/reference/splits)
AVE = [REPO / "data" / "ave" / f"{s}.csv" for s in ("train", "val", "test")]
MUSIC = [REPO / "data" / "music" / f"{s}.csv" for s in ("train", "val", "test")]
MAKE_INDEX = str(REPO / "scripts" / "make_index.py")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MAKE_INDEX, *args], capture_output=True, text=True)


def _clip_ids(path: Path) -> list:
    """Independent parse (plain csv): class/vid of each row's frame path."""
    with open(path, newline="") as f:
        return [row[1].strip("/")[: -len(".mp4")] for row in csv.reader(f)]


# ---------------------------------------------------------------------------------------------------- reader

def test_round_trip(tmp_path: Path) -> None:
    rows = [IndexRow("Bark", "abc-_1", 82), IndexRow("Cat", "x", 3)]
    index.write_index(tmp_path / "a.csv", rows)
    assert (tmp_path / "a.csv").read_text() == "/Bark/abc-_1.wav,/Bark/abc-_1.mp4,82\n/Cat/x.wav,/Cat/x.mp4,3\n"
    assert index.read_index(tmp_path / "a.csv") == rows


@pytest.mark.parametrize("bad, fragment", [
    ("/a/x.wav,/a/x.mp4", "expected 3 fields"),
    ("/a/x.wav,/a/x.mp4,abc", "num_frames 'abc'"),
    ("/a/x.wav,/a/x.mp4,0", "num_frames '0'"),
    ("/a/x.wav,/a/y.mp4,5", "different clips"),
    ("/a/x.wav,/b/x.mp4,5", "different clips"),
    ("a/x.wav,/a/x.mp4,5", "is not /<class>/<vid>.wav"),
    ("/a/x.wav,/a/x.avi,5", "is not /<class>/<vid>.mp4"),
    ("", "expected 3 fields"),
])
def test_malformed_row_names_file_and_row(tmp_path: Path, bad: str, fragment: str) -> None:
    path = tmp_path / "split.csv"
    path.write_text(f"/a/ok.wav,/a/ok.mp4,4\n/a/ok2.wav,/a/ok2.mp4,4\n{bad}\n")
    with pytest.raises(IndexFormatError) as err:
        index.read_index(path)
    assert f"{path}:3:" in str(err.value) and fragment in str(err.value)


def test_reads_reference_files() -> None:
    rows = index.read_index(AVE[0])
    assert len(rows) == len(_clip_ids(AVE[0])) == 3339
    assert {r.label for r in rows} <= set(get_spec("ave").categories)


# ---------------------------------------------------------------------------------------------------- leakage

def test_reference_ave_leakage_numbers() -> None:
    train, val, test = (_clip_ids(p) for p in AVE)
    report = index.check_files(AVE)
    assert report.duplicate_rows("train.csv") == 27 == sum(n - 1 for n in Counter(train).values())
    assert report.overlaps[("train.csv", "test.csv")] == sorted(set(train) & set(test))
    assert len(report.overlaps[("train.csv", "test.csv")]) == 8
    assert len(report.overlaps[("train.csv", "val.csv")]) == 10
    assert report.overlaps[("val.csv", "test.csv")] == []
    assert not report.clean


def test_check_cli_exit_status_and_names() -> None:
    proc = _run("--check", *map(str, AVE))
    assert proc.returncode == 1
    assert "27 duplicate rows" in proc.stdout and "8 clips in both" in proc.stdout and "10 clips in both" in proc.stdout
    train, test = _clip_ids(AVE[0]), _clip_ids(AVE[2])
    for clip in set(train) & set(test):
        assert clip in proc.stdout
    clean = _run("--check", *(str(p) for p in MUSIC))
    assert clean.returncode == 0 and "no leakage found" in clean.stdout


def test_check_cli_malformed_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("/a/x.wav,/a/x.mp4,1\n/a/y.wav,/a/y.mp4\n")
    proc = _run("--check", str(bad))
    assert proc.returncode == 2 and f"{bad}:2" in proc.stderr


def test_cross_class_video_is_leakage() -> None:
    report = index.check_leakage({"train": [IndexRow("Cat", "v1", 3)], "test": [IndexRow("Dog", "v1", 3)]})
    assert not report.clean and report.cross_class == {"v1": ["Cat/v1", "Dog/v1"]}


# ---------------------------------------------------------------------------------------------------- splits

def _rows(counts: dict) -> list:
    return [IndexRow(label, f"{label[:2]}{i:03d}", 10) for label, n in counts.items() for i in range(n)]


def test_stratified_split_sizes_disjoint_deterministic() -> None:
    rows = _rows({"a": 20, "b": 10, "c": 7})
    splits = index.stratified_split(rows, 0.15, 0.15, seed=3)
    per = {s: Counter(r.label for r in rs) for s, rs in splits.items()}
    assert per["test"] == {"a": 3, "b": 2, "c": 1} and per["val"] == {"a": 3, "b": 2, "c": 1}
    ids = [r.clip_id for rs in splits.values() for r in rs]
    assert sorted(ids) == sorted(r.clip_id for r in rows)  # a partition: nothing lost, nothing twice
    assert index.check_leakage(splits).clean
    assert index.stratified_split(list(reversed(rows)), 0.15, 0.15, seed=3) == splits  # order-independent
    assert index.stratified_split(rows, 0.15, 0.15, seed=4) != splits
    # adding a class does not move the clips of the others
    more = index.stratified_split(rows + _rows({"d": 5}), 0.15, 0.15, seed=3)
    assert [r for r in more["test"] if r.label != "d"] == splits["test"]


def test_stratified_split_keeps_one_for_train_and_rejects_bad_fractions() -> None:
    splits = index.stratified_split(_rows({"a": 2}), 0.45, 0.45, seed=0)  # rounds to 1 + 1 of 2
    assert len(splits["train"]) == 1
    with pytest.raises(ValueError, match="val"):
        index.stratified_split(_rows({"a": 5}), 0.6, 0.5, seed=0)


def _wav(path: Path, seconds: float = 0.5, rate: int = 11025) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))


def _frames(folder: Path, n: int, skip: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        if i != skip:
            (folder / f"{i:06d}.jpg").write_bytes(b"\xff\xd8jpeg")


@pytest.fixture()
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    for label, n in [("dog", 8), ("cat", 6)]:
        for i in range(n):
            _wav(root / "data" / "audio" / label / f"{label}{i}.wav")
            _frames(root / "data" / "frames" / label / f"{label}{i}.mp4", 4 + i)
    _wav(root / "data" / "audio" / "dog" / "only_audio.wav")
    _frames(root / "data" / "frames" / "cat" / "only_frames.mp4", 3)
    _wav(root / "data" / "audio" / "cat" / "rate.wav", rate=16000)
    _frames(root / "data" / "frames" / "cat" / "rate.mp4", 3)
    _wav(root / "data" / "audio" / "cat" / "gap.wav")
    _frames(root / "data" / "frames" / "cat" / "gap.mp4", 5, skip=3)
    _frames(root / "data" / "frames" / "dog" / ".dog0.mp4.partial", 2)  # a killed extraction: ignored
    return root


def test_make_index_builds_stratified_deterministic_csvs(media_root: Path, tmp_path: Path) -> None:
    out1, out2 = tmp_path / "idx1", tmp_path / "idx2"
    proc = _run("--root", str(media_root), "--out", str(out1), "--val", "0.2", "--test", "0.2", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    assert _run("--root", str(media_root), "--out", str(out2), "--val", "0.2", "--test", "0.2",
                "--seed", "7").returncode == 0
    splits = {}
    for s in ("train", "val", "test"):
        assert (out1 / f"{s}.csv").read_bytes() == (out2 / f"{s}.csv").read_bytes()
        splits[s] = index.read_index(out1 / f"{s}.csv")
    assert {s: Counter(r.label for r in rs) for s, rs in splits.items()} == {
        "train": {"dog": 4, "cat": 4}, "val": {"dog": 2, "cat": 1}, "test": {"dog": 2, "cat": 1}}
    frames = {r.clip_id: r.num_frames for rs in splits.values() for r in rs}
    assert frames["dog/dog3"] == 7 and frames["cat/cat0"] == 4  # counted on disk
    with open(out1 / "excluded.csv", newline="") as f:
        excluded = {r["clip_id"]: r["reason"] for r in csv.DictReader(f)}
    assert set(excluded) == {"dog/only_audio", "cat/only_frames", "cat/rate", "cat/gap"}
    assert "no frames" in excluded["dog/only_audio"] and "no audio" in excluded["cat/only_frames"]
    assert "16000" in excluded["cat/rate"] and "gap" in excluded["cat/gap"]
    assert _run("--check", *(str(out1 / f"{s}.csv") for s in ("train", "val", "test"))).returncode == 0


def test_make_index_categories_and_split_lists(media_root: Path, tmp_path: Path) -> None:
    proc = _run("--root", str(media_root), "--out", str(tmp_path / "i"), "--categories", "cat")
    assert proc.returncode == 0
    assert {r.label for s in ("train", "val", "test") for r in index.read_index(tmp_path / "i" / f"{s}.csv")} == {"cat"}
    bad = _run("--root", str(media_root), "--out", str(tmp_path / "j"), "--categories", "cat,cow")
    assert bad.returncode == 2 and "cow" in bad.stderr
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("dog/dog0\ndog/dog1\ncat/cat0\n")
    (lists / "val.txt").write_text("dog/dog2\ndog/only_audio\n")
    (lists / "test.txt").write_text("cat/cat1\n")
    proc = _run("--root", str(media_root), "--out", str(tmp_path / "k"), "--splits_from", str(lists))
    assert proc.returncode == 0, proc.stderr
    assert [r.clip_id for r in index.read_index(tmp_path / "k" / "val.csv")] == ["dog/dog2"]
    assert "dog/only_audio: listed in val but has no complete audio + frames" in proc.stdout
    (lists / "test.txt").write_text("dog/dog0\n")  # leaks into train: refused
    leak = _run("--root", str(media_root), "--out", str(tmp_path / "l"), "--splits_from", str(lists))
    assert leak.returncode == 1 and "dog/dog0" in leak.stderr and not (tmp_path / "l").exists()


def test_make_index_empty_root_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m" / "data" / "audio" / "a").mkdir(parents=True)
    proc = _run("--root", str(tmp_path / "m"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no clip has both" in proc.stderr
