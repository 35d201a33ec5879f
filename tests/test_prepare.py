"""Real-dataset preparation on small fake inputs in the real formats (AVE archive, MUSIC json, Kinetics CSV)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset import media
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

@pytest.mark.parametrize("listed_in,vid", [("Annotations.txt", "../../../../victim"),
                                             ("trainSet.txt", "../../../../victim"),
                                             ("trainSet.txt", "/abs/victim"), ("testSet.txt", "..")])
def test_prepare_ave_refuses_video_ids_that_leave_their_folder(tmp_path: Path, listed_in: str, vid: str) -> None:
    """A VideoID ../../../../victim read AVE/../../../../victim.mp4 and replaced a file outside --out with a
    symlink; now the id is refused with the file, row and reason (exit 2) and nothing is written."""
    ave = _ave_archive(tmp_path / "w" / "x")  # AVE/../../../../victim.mp4 is tmp_path/victim.mp4
    out = tmp_path / "o1" / "out"  # videos/Church_bell/../../../../victim.mp4 is tmp_path/victim.mp4 too
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(b"precious")
    bad_line = f"Church bell&{vid}&good&0&10"
    with open(ave / listed_in, "a") as f:
        f.write(bad_line + "\n")
    row = len((ave / listed_in).read_text().splitlines())
    proc = _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out))
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"{ave / listed_in}, row {row}: VideoID" in lines[0] and repr(vid) in lines[0]
    assert not victim.is_symlink() and victim.read_bytes() == b"precious"
    assert not out.exists()  # nothing written


def test_prepare_ave_refuses_a_class_folder_linked_out_of_out(tmp_path: Path) -> None:
    """A symlink inside --out pointing elsewhere is not written through (utils/safepath.py); refused before
    any video is placed."""
    ave, out, elsewhere = _ave_archive(tmp_path), tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "videos").mkdir(parents=True)
    os.symlink(elsewhere, out / "videos" / "Race_car")
    proc = _run("prepare_ave.py", "--ave_root", str(ave), "--out", str(out))
    assert proc.returncode == 2 and "outside" in proc.stderr and "Race_car" in proc.stderr, proc.stderr
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in (out / "videos").iterdir()) == ["Race_car"]


def _fake_yt_dlp(bin_dir: Path, log: Path) -> dict:
    """A yt-dlp stand-in: writes the -o file (ext mp4), fails for urls containing FAIL, logs each call's url
    to ``log`` and its whole argv (one JSON list a line) to ``log`` + ``.argv``."""
    bin_dir.mkdir()
    script = bin_dir / "yt-dlp"
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as f:
    f.write(args[-1] + "\\n")
with open({str(log) + ".argv"!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if "FAIL" in args[-1]:
    sys.stderr.write("ERROR: Video unavailable\\n")
    sys.exit(1)
open(args[args.index("-o") + 1].replace("%(ext)s", "mp4"), "wb").write(b"video")
""")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _argv_calls(log: Path) -> dict:
    """The argv lists the fake yt-dlp recorded, by url."""
    calls = [json.loads(line) for line in Path(str(log) + ".argv").read_text().splitlines()]
    return {c[-1]: c for c in calls}


def _opt(argv: list, name: str) -> str:
    return argv[argv.index(name) + 1]


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


def test_prepare_music_download_refuses_a_class_folder_linked_elsewhere(tmp_path: Path) -> None:
    """A class folder under --out that is a symlink leading out of it: yt-dlp wrote through it; now refused
    (exit 2, one line) before any download."""
    js = _music_json(tmp_path / "m.json", {"cello": ["bbbbbbbbbbb"], "violin": ["vvvvvvvvvvv"]})
    out, elsewhere, log = tmp_path / "out", tmp_path / "elsewhere", tmp_path / "calls.log"
    elsewhere.mkdir()
    out.mkdir()
    os.symlink(elsewhere, out / "violin")
    dl = _run("prepare_music.py", "--json", str(js), "--out", str(out), "--download",
              env=_fake_yt_dlp(tmp_path / "bin", log))
    assert dl.returncode == 2 and "violin/vvvvvvvvvvv" in dl.stderr and "outside" in dl.stderr, dl.stderr
    assert len(dl.stderr.strip().splitlines()) == 1 and "Traceback" not in dl.stderr
    assert not log.exists() and list(elsewhere.iterdir()) == []  # no download at all


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


def test_prepare_music_download_command_caps_height_and_passes_ffmpeg(tmp_path: Path) -> None:
    js = _music_json(tmp_path / "m.json", {"cello": ["bbbbbbbbbbb"], "violin": ["-vvvvvvvvvv"]})
    log = tmp_path / "calls.log"
    env = _fake_yt_dlp(tmp_path / "bin", log)
    proc = _run("prepare_music.py", "--json", str(js), "--out", str(tmp_path / "o"), "--download", env=env)
    assert proc.returncode == 0, proc.stderr
    calls = _argv_calls(log)
    argv = calls["https://www.youtube.com/watch?v=-vvvvvvvvvv"]
    assert _opt(argv, "--ffmpeg-location") == media.find_ffmpeg()
    fmt = _opt(argv, "-f")
    assert "[height<=480]" in fmt and all("[height<=480]" in alt for alt in fmt.split("/")[:4])
    assert "--download-sections" not in argv and "--force-keyframes-at-cuts" not in argv  # whole videos
    log.write_text("")
    Path(str(log) + ".argv").write_text("")
    (tmp_path / "o" / "cello" / "bbbbbbbbbbb.mp4").unlink()
    capped = _run("prepare_music.py", "--json", str(js), "--out", str(tmp_path / "o"), "--download",
                  "--max_height", "360", env=env)
    assert capped.returncode == 0, capped.stderr
    assert "[height<=360]" in _opt(_argv_calls(log)["https://www.youtube.com/watch?v=bbbbbbbbbbb"], "-f")
    bad = _run("prepare_music.py", "--json", str(js), "--out", str(tmp_path / "o"), "--download",
               "--max_height", "0", env=env)
    assert bad.returncode == 2 and "--max_height" in bad.stderr


def test_prepare_music21_solo_json_and_spec(tmp_path: Path) -> None:
    """MUSIC21_solo_videos.json's structure ("version" beside "videos", keys with underscores) with --dataset
    music21 keeps the new instruments; without it they are reported with the hint."""
    js = tmp_path / "MUSIC21_solo_videos.json"
    js.write_text(json.dumps({"version": 2.0, "videos": {"bagpipe": ["kw-OQpF9N4E"], "electric_bass": ["0lSLVJRTeEI"],
                                                        "acoustic_guitar": ["-8AgRz5Jdrw"], "pipa": ["5iKfNcUcPI0"]}},
                             indent=4))
    out = tmp_path / "out"
    proc = _run("prepare_music.py", "--json", str(js), "--dataset", "music21", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [(r["class"], r["id"]) for r in _csv(out / "download_list.csv")] == [
        ("acoustic_guitar", "-8AgRz5Jdrw"), ("bagpipe", "kw-OQpF9N4E"), ("electric_bass", "0lSLVJRTeEI"),
        ("pipa", "5iKfNcUcPI0")]
    assert "MUSIC-21: 4 videos in 4 classes" in proc.stdout
    solo11 = _run("prepare_music.py", "--json", str(js), "--out", str(tmp_path / "out11"))
    assert solo11.returncode == 0 and "'electric_bass' is not a MUSIC class" in solo11.stdout
    assert "pass --dataset music21" in solo11.stdout
    spec, music = get_spec("music21"), get_spec("music")
    assert spec.num_classes == 21 == len(set(spec.categories))
    assert spec.categories[:11] == music.categories
    assert set(spec.categories[11:]) == {"bagpipe", "banjo", "bassoon", "congas", "drum", "electric_bass", "guzheng",
                                         "piano", "pipa", "ukulele"}
    assert (spec.num_epoch, spec.lr_steps, spec.alpha_audio, spec.alpha_visual, spec.train_margin_s) == (
        music.num_epoch, music.lr_steps, music.alpha_audio, music.alpha_visual, music.train_margin_s)
    assert spec.list_path("train") == REPO / "data" / "music21" / "train.csv"


def test_music21_trains_from_rebuilt_lists(tmp_path: Path) -> None:
    """The spec parses into a run with the lists of an index built by make_index.py (no shipped CSVs)."""
    from pipeline.config import get_args_parser, parse_config

    lists = {s: tmp_path / f"{s}.csv" for s in ("train", "val", "test")}
    cfg = parse_config(get_args_parser(), ["--dataset", "music21", "--mode", "train",
                                           *sum([[f"--list_{s}", str(p)] for s, p in lists.items()], [])])
    assert len(cfg.categories) == 21 and cfg.num_epoch == 100 and list(cfg.lr_steps) == [30, 60, 90]
    assert cfg.list_train == str(lists["train"])


def test_prepare_music_refuses_the_duet_json(tmp_path: Path) -> None:
    duet = tmp_path / "MUSIC_duet_videos.json"
    duet.write_text(json.dumps({"version": 1.0, "videos": {"flute violin": ["8DHG_hVSw1o"],
                                                          "acoustic_guitar violin": ["vEOyhF8KLPE"]}}, indent=4))
    out = tmp_path / "out"
    proc = _run("prepare_music.py", "--json", str(duet), "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(duet) in proc.stderr and "duet list" in proc.stderr and "'flute violin'" in proc.stderr
    assert not (out / "download_list.csv").exists()
    nothing = _music_json(tmp_path / "other.json", {"kazoo": ["bbbbbbbbbbb"]})
    proc = _run("prepare_music.py", "--json", str(nothing), "--out", str(out))
    assert proc.returncode == 2 and str(nothing) in proc.stderr and "no video of the MUSIC classes" in proc.stderr


# ---------------------------------------------------------------------------------------------------- Kinetics

KINETICS_HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"


def _kinetics_csvs(folder: Path) -> list:
    """train/validate/test CSVs as Kinetics-400 ships them: quoted labels, is_cc, the split column."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train.csv": ['"playing clarinet",aaaaaaaaaaa,10,20,train,0', '"playing bass guitar",-bbbbbbbbbb,0,10,train,0',
                           '"abseiling",ccccccccccc,0,10,train,0', '"bowling",dd_dddddddd,5,15,train,1'],
             "validate.csv": ['"playing guitar",eeeeeeeeeee,30,40,val,0', '"bowling",dd_dddddddd,30,40,val,0'],
             "test.csv": ['"playing guitar",fffffffffff,1,11,test,0', '"tapping pen",ggggggggggg,0,10,test,0']}
    for name, rows in files.items():
        (folder / name).write_text(KINETICS_HEADER + "\n".join(rows) + "\n")
    return [folder / n for n in files]


def test_prepare_kinetics_sounds_several_csvs_keep_splits(tmp_path: Path) -> None:
    csvs, out = _kinetics_csvs(tmp_path / "k400"), tmp_path / "out"
    proc = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _csv(out / "download_list.csv")
    assert [(r["class"], r["id"], r["time_start"], r["time_end"], r["split"]) for r in rows] == [
        ("playing_clarinet", "aaaaaaaaaaa", "10.0", "20.0", "train"),
        ("playing_bass_guitar", "-bbbbbbbbbb", "0.0", "10.0", "train"),
        ("bowling", "dd_dddddddd", "5.0", "15.0", "train"),
        ("playing_guitar", "eeeeeeeeeee", "30.0", "40.0", "val"),
        ("playing_guitar", "fffffffffff", "1.0", "11.0", "test"), ("tapping_pen", "ggggggggggg", "0.0", "10.0", "test")]
    assert (out / "train.txt").read_text().split() == ["playing_clarinet/aaaaaaaaaaa", "playing_bass_guitar/-bbbbbbbbbb",
                                                       "bowling/dd_dddddddd"]
    assert (out / "val.txt").read_text().split() == ["playing_guitar/eeeeeeeeeee"]
    assert (out / "test.txt").read_text().split() == ["playing_guitar/fffffffffff", "tapping_pen/ggggggggggg"]
    assert f"id dd_dddddddd repeated at {csvs[1]}, row 3 (there in train, here in val)" in proc.stdout
    assert "6 clips in 5 of 27 classes (train 3, val 1, test 2)" in proc.stdout
    classes = get_spec("kinetics_sounds").categories
    empty = [c for c in classes if c not in {"playing_clarinet", "playing_bass_guitar", "bowling", "playing_guitar",
                                             "tapping_pen"}]
    assert f"classes with no rows ({len(empty)}): {', '.join(empty)}" in proc.stdout
    # the same inputs again: nothing replaced; other inputs: refused unless --overwrite
    again = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(out))
    assert again.returncode == 0 and "lists unchanged" in again.stdout
    before = (out / "download_list.csv").read_bytes()
    one = _run("prepare_kinetics_sounds.py", "--csv", str(csvs[1]), "--out", str(out))
    assert one.returncode == 2 and "--overwrite" in one.stderr and str(out / "download_list.csv") in one.stderr
    assert "Traceback" not in one.stderr and (out / "download_list.csv").read_bytes() == before
    replaced = _run("prepare_kinetics_sounds.py", "--csv", str(csvs[1]), "--out", str(out), "--overwrite")
    assert replaced.returncode == 0 and "lists replaced" in replaced.stdout
    assert [r["id"] for r in _csv(out / "download_list.csv")] == ["eeeeeeeeeee", "dd_dddddddd"]
    assert (out / "train.txt").read_text() == ""


def test_prepare_kinetics_sounds_ingests_flat_and_per_class_folders(tmp_path: Path) -> None:
    csvs, out, got = _kinetics_csvs(tmp_path / "k400"), tmp_path / "out", tmp_path / "downloaded"
    got.mkdir()
    (got / "aaaaaaaaaaa_000010_000020.mp4").write_bytes(b"a")  # flat layout
    (got / "-bbbbbbbbbb_000000_000010.mp4").write_bytes(b"b")  # id starting with '-'
    (got / "dd_dddddddd_000005_000015.mp4").write_bytes(b"d")  # id with '_': parsed from the right
    (got / "zzzzzzzzzzz_000000_000010.mp4").write_bytes(b"z")  # not a Kinetics-Sounds clip
    (got / "notes.txt").write_text("x")
    (got / "playing guitar").mkdir()  # per-class layout, label with a space
    (got / "playing guitar" / "fffffffffff_000001_000011.mp4").write_bytes(b"f")
    (got / "playing guitar" / "eeeeeeeeeee_000000_000010.mp4").write_bytes(b"e")  # times differ from the CSV
    proc = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(out), "--ingest", str(got))
    assert proc.returncode == 0, proc.stderr
    placed = out / "playing_clarinet" / "aaaaaaaaaaa.mp4"
    assert placed.read_bytes() == b"a" and placed.stat().st_ino == (got / "aaaaaaaaaaa_000010_000020.mp4").stat().st_ino
    assert (out / "bowling" / "dd_dddddddd.mp4").read_bytes() == b"d"
    assert (out / "playing_guitar" / "fffffffffff.mp4").read_bytes() == b"f"
    report = {(r["id"], r["status"]): r for r in _csv(out / "ingest_report.csv")}
    assert report[("ggggggggggg", "missing")]["split"] == "test"
    assert "file times 0-10 s, CSV 30-40 s" in report[("eeeeeeeeeee", "matched")]["note"]
    assert report[("zzzzzzzzzzz", "not in the lists")]["source"] == str(got / "zzzzzzzzzzz_000000_000010.mp4")
    assert "5 clips matched (5 placed, 0 already in" in proc.stdout and "1 missing, 1 files not in the lists" in proc.stdout
    again = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(out), "--ingest", str(got))
    assert "5 clips matched (0 placed, 5 already in" in again.stdout
    copied = tmp_path / "copied"
    proc = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(copied), "--ingest", str(got),
                "--copy")
    assert proc.returncode == 0, proc.stderr
    clip = copied / "playing_clarinet" / "aaaaaaaaaaa.mp4"
    assert clip.read_bytes() == b"a" and clip.stat().st_ino != (got / "aaaaaaaaaaa_000010_000020.mp4").stat().st_ino
    missing = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(out), "--ingest",
                   str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--ingest" in missing.stderr and "nowhere" in missing.stderr


def test_prepare_kinetics_sounds_ingest_refuses_a_class_folder_linked_elsewhere(tmp_path: Path) -> None:
    """Ingest hard-linked clips through a class folder that is a symlink leading out of --out; now refused
    (exit 2, naming the CSV row) before any clip is placed."""
    csvs, out, got, elsewhere = (_kinetics_csvs(tmp_path / "k400"), tmp_path / "out", tmp_path / "downloaded",
                                 tmp_path / "elsewhere")
    got.mkdir()
    elsewhere.mkdir()
    (got / "aaaaaaaaaaa_000010_000020.mp4").write_bytes(b"a")
    out.mkdir()
    (got / "fffffffffff_000001_000011.mp4").write_bytes(b"f")
    os.symlink(elsewhere, out / "playing_guitar")
    proc = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(out), "--ingest", str(got))
    assert proc.returncode == 2 and "outside" in proc.stderr and "playing_guitar" in proc.stderr, proc.stderr
    assert "test.csv, row 2" in proc.stderr and "Traceback" not in proc.stderr
    assert list(elsewhere.iterdir()) == [] and not (out / "playing_clarinet").exists()  # nothing placed


def test_prepare_kinetics_sounds_download_cuts_exactly(tmp_path: Path) -> None:
    csvs, out = _kinetics_csvs(tmp_path / "k400"), tmp_path / "out"
    log = tmp_path / "calls.log"
    env = _fake_yt_dlp(tmp_path / "bin", log)
    proc = _run("prepare_kinetics_sounds.py", "--csv", *map(str, csvs), "--out", str(out), "--download",
                "--max_height", "240", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "downloaded 6, already present 0, failed 0" in proc.stdout
    argv = _argv_calls(log)["https://www.youtube.com/watch?v=aaaaaaaaaaa"]
    assert _opt(argv, "--download-sections") == "*10-20" and "--force-keyframes-at-cuts" in argv
    assert _opt(argv, "--ffmpeg-location") == media.find_ffmpeg() and "[height<=240]" in _opt(argv, "-f")
    assert (out / "playing_clarinet" / "aaaaaaaaaaa.mp4").read_bytes() == b"video"


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
