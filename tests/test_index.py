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
from dataset.errors import IndexFormatError
from dataset.index import IndexRow
from dataset.specs import get_spec
from utils.errors import MalformedFileError, run_cli

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
    ("/a/x.wav,/a/x.mp4,\u00b2", "num_frames '\u00b2'"),  # '²'.isdigit() is True: must still be refused
    ("/a/x.wav,/a/x.mp4,\u0663", "num_frames '\u0663'"),  # Arabic-Indic three
    ("/a/x.wav,/a/x.mp4,-3", "num_frames '-3'"),
    ("/a/x.wav,/a/x.mp4,5,", "expected 3 fields"),
    (",,", "audio path ''"),
    ('"/a/x.wav,/a/x.mp4,5', "not a CSV row"),
])
def test_malformed_row_names_file_and_row(tmp_path: Path, bad: str, fragment: str) -> None:
    path = tmp_path / "split.csv"
    path.write_text(f"/a/ok.wav,/a/ok.mp4,4\n/a/ok2.wav,/a/ok2.mp4,4\n{bad}\n", encoding="utf-8")
    with pytest.raises(IndexFormatError) as err:
        index.read_index(path)
    assert f"{path}, row 3: " in str(err.value) and fragment in str(err.value)
    assert (err.value.path, err.value.row) == (str(path), 3)
    assert isinstance(err.value, MalformedFileError)  # entry points exit 2 on it through run_cli


def test_superscript_count_is_refused_by_check_too(tmp_path: Path) -> None:
    path = tmp_path / "sup.csv"
    path.write_text("/a/x.wav,/a/x.mp4,\u00b2\n", encoding="utf-8")
    proc = _run("--check", str(path))
    assert proc.returncode == 2 and f"{path}, row 1" in proc.stderr and "num_frames" in proc.stderr


def test_rows_know_where_they_came_from(tmp_path: Path) -> None:
    path = tmp_path / "i.csv"
    path.write_text("/a/x.wav,/a/x.mp4,4\n/b/y.wav,/b/y.mp4,7\n")
    rows = index.read_index(path)
    assert [(r.label, r.vid, r.num_frames, r.line, r.source) for r in rows] == [
        ("a", "x", 4, 1, str(path)), ("b", "y", 7, 2, str(path))]
    assert rows[1].clip_id == "b/y" and rows[1].audio == "/b/y.wav" and rows[1].frames == "/b/y.mp4"
    assert rows[1].fields() == ["/b/y.wav", "/b/y.mp4", "7"]
    with pytest.raises(AttributeError):
        rows[0].label = "c"  # frozen


def test_class_not_in_categories_names_file_row_and_class(tmp_path: Path) -> None:
    path = tmp_path / "i.csv"
    path.write_text("/a/x.wav,/a/x.mp4,4\n/b/y.wav,/b/y.mp4,7\n")
    assert len(index.read_index(path, ["a", "b"])) == 2
    with pytest.raises(IndexFormatError, match=rf"{path}, row 2: class 'b' is not one of the 1 categories \(a\)"):
        index.read_index(path, ["a"])
    with pytest.raises(ValueError, match="unique"):
        index.read_index(path, ["a", "a"])


# undecodable content: (bytes, row named in the error, fragment)
UNDECODABLE = {
    "latin1": (b"/a/x.wav,/a/x.mp4,4\n/caf\xe9/y.wav,/caf\xe9/y.mp4,3\n", 2, "not UTF-8"),
    "binary_nul": (b"/a/x.wav,/a/x.mp4,4\n\x00\x01\x02\x03\x04\n", 2, "binary data"),
    "binary_png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", 1, "not UTF-8"),
    "binary_high": (bytes(range(128, 256)) * 4, 1, "not UTF-8"),
    "utf16": ("/a/x.wav,/a/x.mp4,4\n".encode("utf-16"), 1, "binary data"),
}


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_index_names_file_and_row(tmp_path: Path, name: str) -> None:
    data, row, fragment = UNDECODABLE[name]
    path = tmp_path / f"{name}.csv"
    path.write_bytes(data)
    with pytest.raises(IndexFormatError) as err:
        index.read_index(path)
    assert f"{path}, row {row}: " in str(err.value) and fragment in str(err.value)
    assert run_cli(lambda argv: index.read_index(path) and 0) == 2  # one line, exit 2 at an entry point
    proc = _run("--check", str(path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {err.value}"]  # one line, no traceback
    assert proc.stdout == ""


def test_blank_lines_are_skipped_by_reader_and_check_alike(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_bytes(b"\xef\xbb\xbf/a/x.wav,/a/x.mp4,4\r\n\r\n   \n/a/y.wav,/a/y.mp4,5\n\t\n\n")
    rows = index.read_index(path)
    assert [(r.clip_id, r.line) for r in rows] == [("a/x", 1), ("a/y", 4)]  # rows keep their file line
    proc = _run("--check", str(path))
    assert proc.returncode == 0 and "blank.csv: 2 rows" in proc.stdout, proc.stderr
    bad = tmp_path / "blank_bad.csv"
    bad.write_text("/a/x.wav,/a/x.mp4,4\n\n\n/a/y.wav,/a/y.mp4\n")
    with pytest.raises(IndexFormatError, match=rf"{bad}, row 4: expected 3 fields"):
        index.read_index(bad)
    proc = _run("--check", str(bad))
    assert proc.returncode == 2 and f"{bad}, row 4: expected 3 fields" in proc.stderr


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_index_without_rows_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(IndexFormatError, match="no rows"):
        index.read_index(path)
    proc = _run("--check", str(path))
    assert proc.returncode == 2 and "no rows" in proc.stderr


def test_check_clip_lengths_finds_the_first_short_clip(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("/a/x.wav,/a/x.mp4,9\n\n/a/y.wav,/a/y.mp4,4\n/a/z.wav,/a/z.mp4,2\n")
    rows = index.read_index(path)
    index.check_clip_lengths(rows, 1, 1)
    index.check_clip_lengths(rows, 2, 1)  # needs 2 frames: every clip has them
    with pytest.raises(IndexFormatError) as err:
        index.check_clip_lengths(rows, 3, 2)  # needs (3 - 1) * 2 + 1 = 5 frames: y (row 3) is the first short
    assert str(err.value).startswith(f"{path}, row 3: clip a/y has 4 frames")
    assert "needs 5" in str(err.value) and err.value.row == 3
    with pytest.raises(IndexFormatError, match=r"row 4: clip a/z has 2 frames"):
        index.check_clip_lengths(rows[:1] + rows[2:], 2, 2)
    with pytest.raises(ValueError):
        index.check_clip_lengths(rows, 0, 1)


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


def test_check_cli_malformed_or_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("/a/x.wav,/a/x.mp4,1\n/a/y.wav,/a/y.mp4\n")
    proc = _run("--check", str(bad))
    assert proc.returncode == 2 and f"{bad}, row 2" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    missing = _run("--check", str(tmp_path / "nope.csv"), *(str(p) for p in MUSIC))
    assert missing.returncode == 2 and "nope.csv" in missing.stderr and "Traceback" not in missing.stderr
    folder = _run("--check", str(tmp_path))
    assert folder.returncode == 2 and "Traceback" not in folder.stderr


def test_check_cli_exit_codes_on_small_files(tmp_path: Path) -> None:
    """0 clean, 1 leakage (a clip in two files), 2 malformed: the exit status alone tells them apart."""
    a, b = tmp_path / "train.csv", tmp_path / "test.csv"
    a.write_text("/a/x.wav,/a/x.mp4,4\n/a/y.wav,/a/y.mp4,4\n")
    b.write_text("/a/z.wav,/a/z.mp4,4\n")
    assert _run("--check", str(a), str(b)).returncode == 0
    b.write_text("/a/z.wav,/a/z.mp4,4\n/a/x.wav,/a/x.mp4,4\n")
    leak = _run("--check", str(a), str(b))
    assert leak.returncode == 1 and "a/x" in leak.stdout
    b.write_text("/a/z.wav,/a/z.mp4,4\n/a/x.wav,/a/x.mp4,\u00b2\n", encoding="utf-8")
    bad = _run("--check", str(a), str(b))
    assert bad.returncode == 2 and f"{b}, row 2" in bad.stderr


@pytest.mark.parametrize("second", ["same", "dot", "symlink"])
def test_check_refuses_the_same_file_twice(tmp_path: Path, second: str) -> None:
    """`--check test.csv test.csv` (or ./test.csv, or a link to it) used to drop the second file and report
    "no leakage found" with exit 0: the same file twice is a usage error naming both, exit 2."""
    a = tmp_path / "test.csv"
    a.write_text("/a/x.wav,/a/x.mp4,4\n")
    other = {"same": "test.csv", "dot": "./test.csv", "symlink": "link.csv"}[second]
    if second == "symlink":
        (tmp_path / "link.csv").symlink_to(a)
    proc = subprocess.run([sys.executable, MAKE_INDEX, "--check", "test.csv", other], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--check" in lines[0] and "same file" in lines[0]
    assert "test.csv" in lines[0] and str(Path(other)) in lines[0] and "no leakage" not in proc.stdout


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
    assert "dog/only_audio: val: audio but no frames" in proc.stdout  # the reason the scan found
    (lists / "test.txt").write_text("dog/dog0\n")  # leaks into train: refused
    leak = _run("--root", str(media_root), "--out", str(tmp_path / "l"), "--splits_from", str(lists))
    assert leak.returncode == 1 and "dog/dog0" in leak.stderr and not (tmp_path / "l").exists()


def test_make_index_empty_root_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m" / "data" / "audio" / "a").mkdir(parents=True)
    proc = _run("--root", str(tmp_path / "m"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no clip has both" in proc.stderr
