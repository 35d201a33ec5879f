"""Generate the embedded synthetic audio-visual dataset: real H.264 + AAC mp4 clips.

    python scripts/make_synthetic_dataset.py --out media/synthetic --clips-per-class 100 --seconds 2 --seed 0

writes ``<out>/videos/<class>/<class>_<index>.mp4`` (64x64 px at 16 fps, mono AAC at 22050 Hz), the input
of ``scripts/extract_frames.py`` / ``scripts/extract_audio.py`` (8 fps frames, 11025 Hz audio).

Class design (dataset/synthetic.py): 4 looks (OpenMoji glyphs: keyboard, violin, trumpet, flute) and
4 sound sources (General-MIDI families from the TimGM6mb soundfont: piano, strings, brass, winds) are
paired on a cycle, look i with sound i and with sound i+1 (mod 4):

    keyboard_piano  keyboard_strings  violin_strings  violin_brass
    trumpet_brass   trumpet_winds     flute_winds     flute_piano

Each look is in exactly 2 classes and each sound in exactly 2 classes, so some classes share a look but
differ in sound (keyboard_piano / keyboard_strings) and others share a sound but differ in look
(keyboard_strings / violin_strings). Only the (look, sound) pair names the class. Expected accuracy
ceilings on balanced classes: visual-only 50 %, audio-only 50 %, audio-visual ~100 %.

Nuisance, drawn from one distribution for all classes (so it carries no label information): gradient
backgrounds with blob/stripe/checker textures, the glyph drifting, bouncing, scaling, rotating and swelling
at note onsets, a distractor glyph (everyday objects, never a class look), brightness flicker, Gaussian
sensor noise; for sound, a random instrument of the family, a random melody (scale, tempo, rhythm, pitch walk
within the instrument's range), random loudness and white/pink/brown background noise at 5-25 dB SNR.

Deterministic: a clip depends only on (--seed, class, index, --seconds); the bytes are stable (one encoder
thread, bit-exact flags). Resumable: clips are written to hidden temporaries and renamed when complete, so a
killed run is simply run again (complete clips are skipped, leftovers redone). ``<out>/synthetic.json``
records the settings; re-running into a folder made with other settings is refused.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from dataset.media import is_partial_name  # noqa: E402
from dataset.synthetic import (AUDIO_RATE, SYNTHETIC_CATEGORIES, VIDEO_FPS, VIDEO_SIZE, ClipJob,  # noqa: E402
                               make_clip)
from utils.errors import MalformedFileError, UsageError, run_cli  # noqa: E402
from utils.fileio import atomic_write_text  # noqa: E402

GENERATOR_VERSION = 2  # bump when the rendering changes, so old folders are not silently mixed with new clips
META_NAME = "synthetic.json"
MAX_SECONDS = 60.0  # a sanity bound: clips are short by design


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the synthetic dataset maker."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="dataset folder; clips go to <out>/videos/<class>/")
    p.add_argument("--clips-per-class", "--clips_per_class", dest="clips_per_class", type=int, default=100,
                   help="clips per class (default 100, the demo's)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length in seconds (default 2, the demo's)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed, >= 0 (default 0)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: number of cores)")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm bar")
    return p


def validate(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` naming the flag when an argument is out of range."""
    if args.clips_per_class < 1:
        raise UsageError("--clips-per-class", f"must be >= 1, got {args.clips_per_class}")
    if not 0 < args.seconds <= MAX_SECONDS:
        raise UsageError("--seconds", f"must be in (0, {MAX_SECONDS:g}], got {args.seconds}")
    if round(args.seconds * VIDEO_FPS) < 1:
        raise UsageError("--seconds", f"{args.seconds} gives no video frame at {VIDEO_FPS} fps")
    if args.seed < 0:
        raise UsageError("--seed", f"must be >= 0, got {args.seed}")
    if args.workers < 1:
        raise UsageError("--workers", f"must be >= 1, got {args.workers}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError("--out", f"{args.out} exists and is not a directory")


def settings(args: argparse.Namespace) -> Dict[str, object]:
    """What a clip's content depends on (recorded in <out>/synthetic.json); the clip count is not in it."""
    return {"generator_version": GENERATOR_VERSION, "seed": args.seed, "seconds": args.seconds,
            "fps": VIDEO_FPS, "size": VIDEO_SIZE, "audio_rate": AUDIO_RATE, "categories": SYNTHETIC_CATEGORIES}


def check_or_write_meta(out: Path, current: Dict[str, object]) -> None:
    """Write the settings file, or refuse when the folder was made with other settings (:class:`UsageError`)
    or its settings file is unreadable (:class:`MalformedFileError`)."""
    meta = out / META_NAME
    if meta.exists():
        try:
            old = json.loads(meta.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MalformedFileError(meta, f"not valid JSON ({err}); delete it only if the clips are disposable",
                                     getattr(err, "lineno", None)) from None
        if not isinstance(old, dict):
            raise MalformedFileError(meta, "expected a JSON object of settings")
        diff = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} there vs {current.get(k)!r} now" for k in diff)
            raise UsageError("--out", f"{meta}: folder made with other settings ({details}); "
                                      f"use another --out or the same settings")
        return
    atomic_write_text(meta, json.dumps(current, indent=2) + "\n")


def remove_leftovers(videos: Path) -> int:
    """Delete hidden temporaries left by a killed run under ``videos/<class>/``; returns how many."""
    n = 0
    if not videos.is_dir():
        return 0
    for class_dir in videos.iterdir():
        if not class_dir.is_dir():
            continue
        for entry in class_dir.iterdir():
            if is_partial_name(entry.name) and entry.name.endswith(".partial") and entry.is_file():
                entry.unlink()
                n += 1
    return n


def plan(args: argparse.Namespace) -> List[ClipJob]:
    """Every clip of the requested dataset, class by class."""
    return [ClipJob(args.out, name, i, args.seed, args.seconds)
            for name in SYNTHETIC_CATEGORIES for i in range(args.clips_per_class)]


def run(jobs: List[ClipJob], workers: int, progress: bool = True) -> Counter:
    """Make every job (in ``workers`` processes when > 1); returns counts of "written" and "skipped"."""
    pending = [job for job in jobs if not job.path.is_file()]  # a final name only ever holds a complete clip
    counts: Counter = Counter(skipped=len(jobs) - len(pending))
    bar = tqdm(total=len(pending), desc="synthetic clips", unit="clip", disable=not progress)
    workers = min(workers, len(pending))
    if workers <= 1:
        for job in pending:
            counts[make_clip(job)] += 1
            bar.update()
    else:  # spawn, not fork: workers start clean, without the parent's threads (tqdm's monitor)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for status in pool.imap_unordered(make_clip, pending, chunksize=1):
                counts[status] += 1
                bar.update()
    bar.close()
    return counts


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    validate(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    check_or_write_meta(args.out, settings(args))
    videos = args.out / "videos"
    leftovers = remove_leftovers(videos)
    jobs = plan(args)
    start = time.time()
    counts = run(jobs, args.workers, progress=not args.no_progress)
    print(f"synthetic dataset: {counts['written']} clip(s) written, {counts['skipped']} skipped (already complete), "
          f"{leftovers} leftover temporaries removed, {len(SYNTHETIC_CATEGORIES)} classes x {args.clips_per_class} "
          f"clips x {args.seconds:g} s in {time.time() - start:.1f} s -> {videos}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
