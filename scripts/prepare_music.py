"""MUSIC (solo): turn MUSIC_solo_videos.json (11 instruments) or MUSIC21_solo_videos.json (21, with
``--dataset music21``) into a download list and, optionally, download it with yt-dlp.

    python scripts/prepare_music.py --json MUSIC_solo_videos.json --out media/music/raw [--download]
    python scripts/prepare_music.py --json MUSIC21_solo_videos.json --dataset music21 --out media/music21/raw

Input: ``{"videos": {"<instrument>": ["<youtube id>", ...], ...}}`` (other top-level keys such as
``"version"`` are ignored). Instrument names are mapped to the spec's classes (spaces -> underscores);
instruments outside the spec and spec classes absent from the JSON are reported. The duet list
(MUSIC_duet_videos.json, keys that are instrument pairs such as "flute violin") is refused: its videos have
two labels. Writes ``<out>/download_list.csv`` (class,id,url). With --download (yt-dlp on PATH), videos go to
``<out>/<class>/<id>.mp4`` at most --max_height pixels tall (default 480), merged by the project's ffmpeg;
complete files are skipped, so the command resumes, and failures are listed in ``<out>/download_failures.csv``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.download import (YOUTUBE_ID_RE, Download, add_download_args, download_and_report,  # noqa: E402
                              youtube_url)
from dataset.specs import get_spec  # noqa: E402
from utils.errors import MalformedFileError, UsageError, run_cli  # noqa: E402
from utils.fileio import atomic_write_csv  # noqa: E402

DISPLAY = {"music": "MUSIC", "music21": "MUSIC-21"}  # --dataset -> the name printed in reports


def read_music_json(path: Path) -> Dict[str, List[str]]:
    """Instrument -> YouTube ids from the MUSIC json; undecodable JSON, structure or id errors raise
    :class:`MalformedFileError` naming the file."""
    try:
        data = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"--json {path} not found") from None
    except json.JSONDecodeError as err:
        raise MalformedFileError(path, f"not valid JSON ({err.msg})", err.lineno) from None
    except UnicodeDecodeError as err:
        raise MalformedFileError(path, f"not UTF-8 JSON ({err.reason} at byte {err.start})") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise MalformedFileError(path, 'expected {"videos": {"<instrument>": [ids...]}}')
    out: Dict[str, List[str]] = {}
    for name, ids in data["videos"].items():
        if not isinstance(ids, list):
            raise MalformedFileError(path, f'videos["{name}"] is {type(ids).__name__}, expected a list of ids')
        for i, vid in enumerate(ids):
            if not isinstance(vid, str) or not YOUTUBE_ID_RE.match(vid):
                raise MalformedFileError(path, f'videos["{name}"][{i}] = {vid!r} is not an 11-character YouTube id')
        out[name] = ids
    refuse_duet_list(path, out)
    return out


def _label(name: str) -> str:
    return name.strip().replace(" ", "_")


def refuse_duet_list(path: Path, videos: Dict[str, List[str]]) -> None:
    """Raise :class:`MalformedFileError` when the keys are instrument pairs ("acoustic_guitar violin"), as in
    MUSIC_duet_videos.json: each of its videos has two labels, which a one-label classifier cannot use."""
    known = set(get_spec("music21").categories)
    pairs = [name for name in videos if len(name.split()) >= 2 and all(part in known for part in name.split())]
    if pairs:
        raise MalformedFileError(path, f"this is the MUSIC duet list (keys are instrument pairs such as "
                                       f"{pairs[0]!r}; {len(pairs)} of {len(videos)} keys): duet videos have two "
                                       "labels; use MUSIC_solo_videos.json or MUSIC21_solo_videos.json")


def build_list(videos: Dict[str, List[str]], classes: Sequence[str], dataset: str = "music"
               ) -> Tuple[List[Download], List[str]]:
    """Download items for the spec classes, and report lines for everything dropped or missing."""
    notes: List[str] = []
    by_class: Dict[str, List[str]] = {}
    left_out: List[str] = []
    for name, ids in videos.items():
        label = _label(name)
        if label not in classes:
            notes.append(f"instrument {name!r} is not a {DISPLAY[dataset]} class: {len(ids)} videos left out")
            left_out.append(label)
            continue
        unique = list(dict.fromkeys(ids))
        if len(unique) != len(ids):
            notes.append(f"{label}: {len(ids) - len(unique)} repeated ids dropped")
        by_class.setdefault(label, []).extend(unique)
    owners: Dict[str, List[str]] = {}
    for label, ids in by_class.items():
        for vid in ids:
            owners.setdefault(vid, []).append(label)
    ambiguous = {v for v, labels in owners.items() if len(labels) > 1}
    for vid in sorted(ambiguous):
        notes.append(f"id {vid} is listed under {', '.join(owners[vid])}: left out of all (label ambiguous)")
    notes += [f"class {c} has no videos in the JSON" for c in classes if c not in by_class]
    if left_out and dataset == "music" and set(left_out) <= set(get_spec("music21").categories):
        notes.append("the left-out instruments are MUSIC-21 classes: pass --dataset music21 to keep all 21")
    items = [Download(label, vid, youtube_url(vid)) for label in classes for vid in by_class.get(label, [])
             if vid not in ambiguous]
    return items, notes


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the MUSIC preparation."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, required=True, help="MUSIC_solo_videos.json or MUSIC21_solo_videos.json")
    p.add_argument("--dataset", choices=("music", "music21"), default="music",
                   help="the spec whose classes are kept: music (11 instruments) or music21 (21)")
    p.add_argument("--out", type=Path, required=True, help="output folder (download list, <class>/<id>.mp4)")
    add_download_args(p, "videos")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        items, notes = build_list(read_music_json(args.json), get_spec(args.dataset).categories, args.dataset)
    except FileNotFoundError as err:  # malformed files reach run_cli, which exits 2 as well
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"  {note}")
    if not items:
        raise UsageError("--json", f"{args.json} lists no video of the {DISPLAY[args.dataset]} classes")
    out_list = args.out / "download_list.csv"
    atomic_write_csv(out_list, ["class", "id", "url"], [(d.label, d.vid, d.url) for d in items])
    print(f"{DISPLAY[args.dataset]}: {len(items)} videos in {len({d.label for d in items})} classes -> {out_list}")
    if not args.download:
        return 0
    print(download_and_report(items, args.out, args.workers, args.max_height))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
