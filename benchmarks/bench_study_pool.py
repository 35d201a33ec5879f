"""Wall time of a study run one job after the other in one process (``--jobs 1``, every core's threads in each
job) against the local launcher's pool (``--jobs N``, N workers of cores/N threads), on the same plan, in one run.

    python benchmarks/bench_study_pool.py                  # the quick preset, 5 clips per class, --jobs 2
    python benchmarks/bench_study_pool.py --clips 12 --jobs 2 --seeds 0 1

The embedded media are made once (not timed) and shared by both studies; each study is a fresh folder, run
--repeats times alternately, and the best run of each is reported (on a shared machine other load only slows a
run down). Prints the two times and their ratio. Both studies' reports are compared up to the timings: the
pool must give the same numbers when the thread count per job is the same (--jobs 1 under OMP_NUM_THREADS=1
against the pool), which the last line says.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]


def run(cmd: List[str], threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"study failed (exit {proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def body(report: Path) -> str:
    """The report without the parts that name times or evaluation folders."""
    text = report.read_text().split("## Provenance")[0]
    text = re.sub(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]+-[0-9A-Za-z_]+", "<eval>", text)
    return "\n".join(re.sub(r"\| [0-9.]+ \|$", "| <s> |", line) for line in text.splitlines())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=5, help="clips per class of the embedded set")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = [sys.executable, str(REPO / "scripts" / "run_study.py"), "--quick", "--media", str(root / "media"),
                "--index", str(root / "index"), "--clips_per_class", str(a.clips), "--seeds", *map(str, a.seeds)]
        for job in ("generate", "frames", "audio", "index"):  # the media, once (the study's data jobs; not timed)
            run([*base, "--out", str(root / "media_only"), "--job", job], cores)
        best = {"sequential": float("inf"), "pool": float("inf")}
        for r in range(a.repeats):
            best["sequential"] = min(best["sequential"], run([*base, "--out", str(root / f"seq{r}")], cores))
            best["pool"] = min(best["pool"], run([*base, "--out", str(root / f"pool{r}"), "--jobs", str(a.jobs)],
                                                 cores))
        print(f"quick study, {a.clips} clips per class, seeds {a.seeds}, {cores} cores")
        print(f"--jobs 1 ({cores} thread(s) per job): {best['sequential']:.1f} s")
        print(f"--jobs {a.jobs} ({max(1, cores // a.jobs)} thread(s) per job): {best['pool']:.1f} s")
        print(f"ratio sequential / pool: {best['sequential'] / best['pool']:.2f}")
        same = body(root / "seq0" / "report.md") == body(root / "pool0" / "report.md")
        print("reports equal up to timings: " + ("yes" if same else
              "no (expected when the jobs' thread counts differ: last-bit CPU kernel differences)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
