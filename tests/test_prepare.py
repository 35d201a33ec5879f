"""Real-dataset preparation on small fake inputs in the real formats (AVE archive, MUSIC json, Kinetics CSV)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from dataset.specs import get_spec

REPO = Path(__file__).resolve().parents[1]
HEADER = "Category&VideoID&Quality&StartTime&EndTime"


def _run(script: str, *args: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                          env=env)


def _csv(path: Path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------- AVE

def _ave_archive(root: Path) -> Path:
    ave = root / "AVE_Dataset"
    (ave / "AVE").mkdir(parents=True)
    lines = {"train": ["Church bell&aaaaaaaaaaa&good&0&10", "Fixed-wing aircraft, airplane&bbbbbbbbbbb&good&0&10",
                       "Church bell&aaaaaaaaaaa&good&0&10", "Frying (food)&-cccccccccc&good&2&8"],
             "val": ["Race car, auto racing&ddddddddddd&good&0&10", "Frying (food)&-cccccccccc&good&2&8"],
             "test": ["Race car, auto racing&eeeeeeeeeee&good&0&10", "Church bell&missingmiss&good&0&10"]}
    for split, name in [("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")]:
        (ave / name).write_text("\n".join(lines[split]) + "\n")
    (ave / "Annotations.txt").write_text("\n".join([HEADER, *sum(lines.values(), [])]) + "\n")
    for vid in ("aaaaaaaaaaa", "bbbbbbbbbbb", "-cccccccccc", "ddddddddddd", "eeeeeeeeeee"):
        (ave / "AVE" / f"{vid}.mp4").write_bytes(vid.encode())
    return ave


def test_prepare_ave_layout_splits_and_reports(tmp_path: Path) -> None:
    ave, out = _ave_archive(tmp_path), tmp_path / "out"
    proc = _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    link = out / "videos" / "Church_bell" / "aaaaaaaaaaa.mp4"
    assert link.is_symlink() and Path(os.readlink(link)) == (ave / "AVE" / "aaaaaaaaaaa.mp4").resolve()
    splits = {s: (out / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert splits == {"train": ["Church_bell/aaaaaaaaaaa", "airplane/bbbbbbbbbbb"],  # repeat and leak removed
                      "val": ["Race_car/ddddddddddd", "Frying/-cccccccccc"],
                      "test": ["Race_car/eeeeeeeeeee"]}
    assert [r["clip_id"] for r in _csv(out / "missing_videos.csv")] == ["Church_bell/missingmiss"]
    issues = {r["clip_id"]: r["issue"] for r in _csv(out / "split_issues.csv")}
    assert "repeated in train" in issues["Church_bell/aaaaaaaaaaa"]
    assert "in train and val" in issues["Frying/-cccccccccc"]
    assert "1 listed but missing" in proc.stdout
    again = _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out))
    assert "0 placed, 0 updated, 5 unchanged" in again.stdout


def test_prepare_ave_copy_and_bad_inputs(tmp_path: Path) -> None:
    ave, out = _ave_archive(tmp_path), tmp_path / "out"
    assert _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out), "--copy").returncode == 0
    copied = out / "videos" / "Frying" / "-cccccccccc.mp4"
    assert not copied.is_symlink() and copied.read_bytes() == b"-cccccccccc"
    no_root = _run("prepare_ave.py", "--ave_root", str(tmp_path), "--out", str(out))
    assert no_root.returncode == 2 and "did you mean its AVE_Dataset" in no_root.stderr
    with open(ave / "valSet.txt", "a") as f:
        f.write("Unicorn&zzzzzzzzzzz&good&0&10\n")
    bad = _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out))
    assert bad.returncode == 2 and f"{ave / 'valSet.txt'}, row 3" in bad.stderr and "Unicorn" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    (ave / "valSet.txt").write_bytes(b"Race car, auto racing&ddddddddddd&good&0&10\nCaf\xe9&x&good&0&10\n")
    latin1 = _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out))
    assert latin1.returncode == 2 and "Traceback" not in latin1.stderr
    assert f"{ave / 'valSet.txt'}, row 2" in latin1.stderr and "not UTF-8" in latin1.stderr


# ---------------------------------------------------------------------------------------------------- MUSIC

def _fake_yt_dlp(bin_dir: Path, log: Path) -> dict:
    """A yt-dlp stand-in: writes the -o file (ext mp4), fails for urls containing FAIL, logs each call."""
    bin_dir.mkdir()
    script = bin_dir / "yt-dlp"
    script.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as f:
    f.write(args[-1] + "\\n")
if "FAIL" in args[-1]:
    sys.stderr.write("ERROR: Video unavailable\\n")
    sys.exit(1)
open(args[args.index("-o") + 1].replace("%(ext)s", "mp4"), "wb").write(b"video")
""")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _music_json(path: Path, videos: dict) -> Path:
    path.write_text(json.dumps({"videos": videos}))
    return path


def test_prepare_music_list_and_download(tmp_path: Path) -> None:
    js = _music_json(tmp_path / "m.json", {"acoustic guitar": ["aaaaaaaaaaa", "aaaaaaaaaaa", "FAILaaaaaaa"],
                                           "cello": ["bbbbbbbbbbb", "sharedshare"], "violin": ["sharedshare"],
                                           "banjo": ["ccccccccccc"]})
    out = tmp_path / "out"
    proc = _run("prepare_music.py", "--json", str(js), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _csv(out / "download_list.csv")
    assert [(r["class"], r["id"]) for r in rows] == [("acoustic_guitar", "aaaaaaaaaaa"),
                                                     ("acoustic_guitar", "FAILaaaaaaa"), ("cello", "bbbbbbbbbbb")]
    assert rows[0]["url"] == "https://www.youtube.com/watch?v=aaaaaaaaaaa"
    assert "'banjo' is not a MUSIC class" in proc.stdout and "sharedshare is listed under cello, violin" in proc.stdout
    assert "class flute has no videos" in proc.stdout

    log = tmp_path / "calls.log"
    env = _fake_yt_dlp(tmp_path / "bin", log)
    dl = _run("prepare_music.py", "--json", str(js), "--out", str(out), "--download", "--workers", "2", env=env)
    assert dl.returncode == 0, dl.stderr
    assert (out / "acoustic_guitar" / "aaaaaaaaaaa.mp4").read_bytes() == b"video"
    assert (out / "cello" / "bbbbbbbbbbb.mp4").is_file()
    failures = _csv(out / "download_failures.csv")
    assert [r["id"] for r in failures] == ["FAILaaaaaaa"] and "Video unavailable" in failures[0]["reason"]
    assert "downloaded 2, already present 0, failed 1" in dl.stdout
    log.write_text("")
    again = _run("prepare_music.py", "--json", str(js), "--out", str(out), "--download", env=env)
    assert "downloaded 0, already present 2, failed 1" in again.stdout
    assert log.read_text().split() == ["https://www.youtube.com/watch?v=FAILaaaaaaa"]  # complete files not refetched


def test_prepare_music_errors(tmp_path: Path) -> None:
    js = _music_json(tmp_path / "m.json", {"cello": ["bbbbbbbbbbb"]})
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python only: no yt-dlp
    proc = _run("prepare_music.py", "--json", str(js), "--out", str(tmp_path / "o"), "--download", env=env)
    assert proc.returncode == 2 and "yt-dlp" in proc.stderr
    bad = _music_json(tmp_path / "bad.json", {"cello": ["bbbbbbbbbbb", "short"]})
    proc = _run("prepare_music.py", "--json", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and 'videos["cello"][1]' in proc.stderr and str(bad) in proc.stderr
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"videos": {"caf\u00e9": ["bbbbbbbbbbb"]}}'.encode("latin-1"))
    proc = _run("prepare_music.py", "--json", str(latin1), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and str(latin1) in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------- Kinetics

def test_prepare_kinetics_sounds(tmp_path: Path) -> None:
    src = tmp_path / "k400.csv"
    src.write_text("label,youtube_id,time_start,time_end,split\n"
                   "playing clarinet,aaaaaaaaaaa,10,20,train\n"
                   "\"playing bass guitar\",-bbbbbbbbbb,0,10,train\n"
                   "abseiling,ccccccccccc,0,10,train\n"
                   "bowling,ddddddddddd,5,15,train\n"
                   "bowling,ddddddddddd,30,40,train\n")
    out = tmp_path / "out"
    proc = _run("prepare_kinetics_sounds.py", "--csv", str(src), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _csv(out / "download_list.csv")
    assert [(r["class"], r["id"], r["time_start"], r["time_end"]) for r in rows] == [
        ("playing_clarinet", "aaaaaaaaaaa", "10.0", "20.0"), ("playing_bass_guitar", "-bbbbbbbbbb", "0.0", "10.0"),
        ("bowling", "ddddddddddd", "5.0", "15.0")]
    classes = get_spec("kinetics_sounds").categories
    empty = [c for c in classes if c not in {"playing_clarinet", "playing_bass_guitar", "bowling"}]
    assert f"classes with no rows ({len(empty)}): {', '.join(empty)}" in proc.stdout
    assert "id ddddddddddd repeated at row 6" in proc.stdout


def test_prepare_kinetics_sounds_bad_inputs(tmp_path: Path) -> None:
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("label,youtube_id,start,end,split\nbowling,ddddddddddd,5,15,train\n")
    proc = _run("prepare_kinetics_sounds.py", "--csv", str(bad_header), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "time_start" in proc.stderr and f"{bad_header}, row 1" in proc.stderr
    bad_row = tmp_path / "r.csv"
    bad_row.write_text("label,youtube_id,time_start,time_end,split\nbowling,ddddddddddd,5,15,train\n"
                       "bowling,eeeeeeeeeee,x,15,train\n")
    proc = _run("prepare_kinetics_sounds.py", "--csv", str(bad_row), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and f"{bad_row}, row 3" in proc.stderr and "time_start 'x'" in proc.stderr
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"label,youtube_id,time_start,time_end,split\n\x00\x01\x02\x03\n")
    proc = _run("prepare_kinetics_sounds.py", "--csv", str(binary), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and f"{binary}, row 2" in proc.stderr and "Traceback" not in proc.stderr


def test_prepare_ave_bom_header_commas_dash_ids_and_two_class_videos(tmp_path: Path) -> None:
    """The archive's real quirks: a UTF-8 BOM before the header, category names with commas, ids beginning
    with '-', and a video annotated under two classes (reported with both labels and the rule)."""
    ave = tmp_path / "AVE_Dataset"
    (ave / "AVE").mkdir(parents=True)
    train = ["Rodents, rats, mice&-rrrrrrrrrr&good&0&10", "Bark&-2wo2wo2wo&good&0&10", "Goat&-2wo2wo2wo&good&1&9"]
    val, test = ["Bark&vvvvvvvvvvv&good&0&10"], ["Goat&ttttttttttt&good&0&10"]
    bom = "\ufeff"
    (ave / "Annotations.txt").write_text(bom + "\n".join([HEADER, *train, *val, *test]) + "\n", encoding="utf-8")
    for name, lines in [("trainSet.txt", train), ("valSet.txt", val), ("testSet.txt", test)]:
        (ave / name).write_text(bom + "\n".join([HEADER, *lines]) + "\r\n", encoding="utf-8")
    for vid in ("-rrrrrrrrrr", "-2wo2wo2wo", "vvvvvvvvvvv", "ttttttttttt"):
        (ave / "AVE" / f"{vid}.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    proc = _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "splits" / "train.txt").read_text().split() == ["Rodents/-rrrrrrrrrr", "Bark/-2wo2wo2wo"]
    issues = {r["clip_id"]: r["issue"] for r in _csv(out / "split_issues.csv")}
    issue = issues["Goat/-2wo2wo2wo"]
    assert "annotated under two classes in train: Bark" in issue and "Goat" in issue and "first line wins" in issue
    assert "annotated under 2 classes: -2wo2wo2wo: Bark and Goat" in proc.stdout
    assert "1 videos annotated under two classes" in proc.stdout and "repeated" not in issue
