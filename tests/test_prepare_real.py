"""The README's MUSIC and Kinetics-Sounds steps, run as written (paths moved under tmp, tiny training sizes):
a MUSIC id list whose videos are made here with ffmpeg and "downloaded" by a stand-in yt-dlp, and a folder
of Kinetics clips in the flat downloaded layout with the Kinetics-400 CSVs, each going through prepare,
extract, make_index against the shipped reference split, and the per-dataset train and attack scripts."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from dataset import media
from dataset.index import read_index
from utils.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
TINY = ["--num_epoch", "1", "--audLen", "4096", "--imgSize", "16", "--arch_frame", "resnet10",
        "--batch_size_per_gpu", "32", "--workers", "0", "--no_progress", "--disp_iter", "0"]
TINY_EVAL = ["--attack_type", "fgsm", "--eps", "visual=0,audio=0", "visual=0.006,audio=0.006", "--save_examples", "1"]


def readme_steps(name: str) -> List[str]:
    """The command lines of the README's bash block marked ``<!-- steps: NAME``."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- steps: {name}\b.*?-->\n```bash\n(.*?)```", text, re.S)
    assert m, f"README has no '<!-- steps: {name}' block"
    return [line for line in m.group(1).splitlines() if line.strip()]


def make_video(path: Path, seconds: float, freq: int, colour: str) -> None:
    """A small real mp4 (H.264 + AAC) with a class-specific colour and tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([media.find_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c={colour}:size=40x30:rate=25:duration={seconds}", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:sample_rate=22050:duration={seconds}", "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)


def reference_ids(dataset: str, classes: List[str]) -> Dict[str, Dict[str, List[str]]]:
    """split -> class -> the first YouTube ids of the shipped reference split (2 train, 1 val, 1 test)."""
    take = {"train": 2, "val": 1, "test": 1}
    out: Dict[str, Dict[str, List[str]]] = {}
    for split, n in take.items():
        rows = read_index(REPO / "data" / dataset / f"{split}.csv")
        out[split] = {c: [r.vid for r in rows if r.label == c][:n] for c in classes}
    return out


def run_steps(lines: List[str], subs: Dict[str, str], categories: List[str], env: dict) -> None:
    """Run the README lines as one bash script: ``subs`` applied, ``python`` the project's, the training and
    attack scripts given the tiny sizes and ``--categories``."""
    script = ["set -euo pipefail"]
    for line in lines:
        for old, new in subs.items():
            line = line.replace(old, new)
        if line.startswith("python "):
            line = f"{PY} {line[len('python '):]}"
        if "/train_attack_" in line:
            line += " " + " ".join(TINY + ["--categories", *categories])
        if "/eval_attack_" in line:
            line += " " + " ".join(TINY + ["--categories", *categories] + TINY_EVAL)
        script.append(line)
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, "\n".join(script) + f"\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"


def _env(tmp_path: Path, extra_path: str = "") -> dict:
    path = f"{extra_path}{os.pathsep}{os.environ['PATH']}" if extra_path else os.environ["PATH"]
    return dict(os.environ, PATH=path, CKPT=str(tmp_path / "runs"), SKIP_SETUP="1", OMP_NUM_THREADS="1",
                PYTHONPATH=str(REPO))


def check_trained_and_attacked(runs: Path, run_id: str, categories: List[str]) -> None:
    args = json.loads((runs / run_id / "args.json").read_text())
    assert args["categories"] == categories and args["audLen"] == 4096
    rows = json.loads((RunDir(runs / run_id).latest_eval() / "results.json").read_text())
    assert [r["eps_visual"] for r in rows] == [0.0, 0.006]


def _index_ids(index: Path) -> Dict[str, List[str]]:
    return {s: sorted(r.clip_id for r in read_index(index / f"{s}.csv")) for s in ("train", "val", "test")}


def test_readme_music_steps_from_an_id_list(tmp_path: Path) -> None:
    classes = ["cello", "flute"]
    ids = reference_ids("music", classes)
    src = tmp_path / "youtube"  # what the stand-in yt-dlp "downloads", by id
    for split in ids.values():
        for k, c in enumerate(classes):
            for vid in split[c]:
                make_video(src / f"{vid}.mp4", 1.5, 440 * (k + 1), ("red", "blue")[k])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "yt-dlp").write_text(f"""#!{sys.executable}
import shutil, sys
args = sys.argv[1:]
assert "--ffmpeg-location" in args and "[height<=480]" in args[args.index("-f") + 1], args
vid = args[-1].split("v=", 1)[1]
shutil.copyfile({str(src)!r} + "/" + vid + ".mp4", args[args.index("-o") + 1].replace("%(ext)s", "mp4"))
""")
    (bin_dir / "yt-dlp").chmod(0o755)
    solo = {c: [v for split in ids.values() for v in split[c]] for c in classes}
    solo["acoustic_guitar"] = []  # an instrument without videos here
    js = tmp_path / "MUSIC_solo_videos.json"
    js.write_text(json.dumps({"videos": solo}, indent=4))
    run_steps(readme_steps("music"), {"MUSIC_solo_videos.json": str(js), "media/": f"{tmp_path}/media/"},
              classes, _env(tmp_path, str(bin_dir)))
    index = tmp_path / "media" / "music" / "index"
    assert _index_ids(index) == {s: sorted(f"{c}/{v}" for c in classes for v in ids[s][c]) for s in ids}
    with open(index / "excluded.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 520 - 8  # the reference's other clips: not on disk here
    check_trained_and_attacked(tmp_path / "runs", "music-concat", classes)


def test_readme_kinetics_steps_from_a_flat_folder_of_clips(tmp_path: Path) -> None:
    classes = ["playing_drums", "tap_dancing"]
    ids = reference_ids("kinetics_sounds", classes)
    k400, clips = tmp_path / "kinetics400", tmp_path / "kinetics400_clips"
    k400.mkdir()
    names = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}
    for split, per_class in ids.items():
        rows = ["label,youtube_id,time_start,time_end,split,is_cc"]
        for k, c in enumerate(classes):
            for j, vid in enumerate(per_class[c]):
                rows.append(f'"{c.replace("_", " ")}",{vid},{j},{j + 10},{split},0')
                make_video(clips / f"{vid}_{j:06d}_{j + 10:06d}.mp4", 1.5, 440 * (k + 1), ("green", "white")[k])
        rows.append('"abseiling",aaaaaaaaaaa,0,10,' + split + ",0")  # not a Kinetics-Sounds class
        (k400 / names[split]).write_text("\n".join(rows) + "\n")
    with open(k400 / "test.csv", "a") as f:
        f.write('"playing drums",missingclip,5,15,test,0\n')  # listed, never downloaded
    run_steps(readme_steps("kinetics"), {"kinetics400_clips": str(clips), "kinetics400/": f"{k400}/",
                                         "media/": f"{tmp_path}/media/"}, classes, _env(tmp_path))
    raw = tmp_path / "media" / "kinetics_sounds" / "raw"
    with open(raw / "ingest_report.csv", newline="") as f:
        report = {r["id"]: r["status"] for r in csv.DictReader(f)}
    assert report.pop("missingclip") == "missing" and set(report.values()) == {"matched"} and len(report) == 8
    index = tmp_path / "media" / "kinetics_sounds" / "index"
    assert _index_ids(index) == {s: sorted(f"{c}/{v}" for c in classes for v in ids[s][c]) for s in ids}
    check_trained_and_attacked(tmp_path / "runs", "kinetics_sounds-concat", classes)
    # Kinetics-400's own split, from the per-split lists the prepare step wrote (README, after the block)
    own = tmp_path / "own_index"
    proc = subprocess.run([str(PY), "scripts/make_index.py", "--root", str(tmp_path / "media" / "kinetics_sounds"),
                           "--out", str(own), "--splits_from", str(raw)], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _index_ids(own) == _index_ids(index)
