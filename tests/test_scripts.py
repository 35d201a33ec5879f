"""The shell scripts: syntax of every one, and each per-dataset script actually run with tiny overrides on
fake media of that dataset's categories; plus the demo's --quick study end to end."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import main_attack
from pipeline.study_sections import SECTIONS
from reporting.study_results import StudyRecord
from dataset.specs import get_spec
from pipeline import study
from tests.fake_media import make_fake_media
from tests.studies import OWN_CATS, PY, local_env, own_study_cmd, slurm_cmd, slurm_env, study_cmd
from utils.errors import run_cli
from utils.rundir import RunDir, eval_file

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").glob("*.sh")) + [REPO / "scripts" / "lib" / "common.sh", REPO / ".ci" / "run"]
DATASETS = {"AVE": "ave", "MUSIC": "music", "Kinetics": "kinetics_sounds"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_there_are_twelve_per_dataset_scripts():
    names = {p.name for p in SCRIPTS}
    for up in DATASETS:
        for kind in ("train_attack", "eval_attack", "train_defense", "eval_defense", "certify"):
            assert f"{kind}_{up}.sh" in names


def _env(tmp_path: Path, data_root: Path) -> dict:
    return dict(os.environ, DATA_ROOT=str(data_root), CKPT=str(tmp_path / "runs"), SKIP_SETUP="1",
                OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


# the per-dataset scripts' tiny overrides: the training flags (all scripts) and each script's own
TINY = ["--num_epoch", "1", "--audLen", "4096", "--imgSize", "16", "--arch_frame", "resnet10", "--batch_size_per_gpu",
        "32", "--workers", "0", "--no_progress", "--disp_iter", "0"]
STEPS = [("train_attack", []),
         ("eval_attack", ["--attack_type", "fgsm", "--eps", "visual=0,audio=0", "visual=0.006,audio=0.006",
                          "--save_examples", "1"]),
         ("train_defense", ["--", "--bank_size", "16", "--unrolled_iters", "5", "--ista_iters", "50"]),
         ("eval_defense", ["--attack_type", "fgsm", "--eps", "visual=0.006,audio=0.006", "--attack_steps", "1",
                           "--bank_size", "16", "--unrolled_iters", "5", "--ista_iters", "50", "--restarts", "1",
                           "--apgd_steps", "2", "--square_queries", "5"]),
         ("certify", ["--cert_n0", "2", "--cert_n", "8", "--cert_alpha", "0.05", "--cert_modalities", "both"])]


@pytest.mark.parametrize("up", list(DATASETS))
def test_per_dataset_scripts_run_with_tiny_overrides(up, tmp_path):
    """AVE: every script, one after the other, on fake media of its classes. MUSIC and Kinetics: the defence
    training, which reads what is their own (classes, MinSim weight from the dataset spec); their other scripts
    pass AVE's flags with their own dataset (test_every_per_dataset_script_passes_aves_flags_with_its_dataset),
    so they run as AVE's do (suite time)."""
    spec = get_spec(DATASETS[up])
    media = make_fake_media(tmp_path / "media", list(spec.categories), clips_per_class=2, num_frames=4,
                            seconds=0.5, img_hw=(24, 24), seed=0)
    tiny = ["--list_train", str(media["all"]), "--list_val", str(media["val"]), "--list_test", str(media["test"]),
            *TINY]
    env = _env(tmp_path, media["root"])
    steps = STEPS if up == "AVE" else [st for st in STEPS if st[0] == "train_defense"]
    for kind, extra in steps:
        proc = subprocess.run(["bash", str(REPO / "scripts" / f"{kind}_{up}.sh"), *tiny, *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{kind}_{up}.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    ds = DATASETS[up]
    runs = tmp_path / "runs"
    # the training flags reach the run, with the dataset's own classes
    args = json.loads((runs / f"{ds}-{'concat' if up == 'AVE' else 'minsim'}" / "args.json").read_text())
    assert args["audLen"] == 4096 and args["categories"] == list(spec.categories)
    assert RunDir(runs / f"{ds}-minsim").features.is_file()
    # the paper's MinSim weight and mix come from the dataset spec (KS: 0.8 and 0.6)
    minsim_args = json.loads((runs / f"{ds}-minsim" / "args.json").read_text())
    assert minsim_args["minsim_weight"] == spec.minsim_weight
    assert RunDir(runs / f"{ds}-minsim-banks").done_train.exists()
    if up != "AVE":
        return
    assert args["eps_unit"] == "normalized"
    certified = RunDir(runs / f"{ds}-concat").latest_eval()  # the certify step ran last
    assert json.loads(eval_file(certified, "certify").read_text())["settings"]["both"]["clips"]
    assert (RunDir(runs / f"{ds}-minsim-banks").latest_eval() / "robustness.json").is_file()
    evaluation = sorted(p for p in RunDir(runs / f"{ds}-concat").evals.iterdir()
                        if (p / "results.json").is_file())[-1]  # the attack evaluation
    eval_cfg = json.loads((evaluation / "eval.json").read_text())["config"]
    assert eval_cfg["eps_unit"] == args["eps_unit"] and eval_cfg["audLen"] == args["audLen"]
    rows = json.loads((evaluation / "results.json").read_text())
    assert [r["eps_visual"] for r in rows] == [0.0, 0.006]


FAKE_PYTHON = r'''#!{python}
"""Records its command line (one JSON list per call) instead of running it; ``-m utils.rundir RUN KEY`` (the
scripts' run_file) prints a placeholder path."""
import json, os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1:3] == ["-m", "utils.rundir"]:
    print(f"{{sys.argv[3]}}/<{{sys.argv[4]}}>")
'''


def test_every_per_dataset_script_passes_aves_flags_with_its_dataset(tmp_path):
    """Each of the 15 per-dataset scripts, with the tiny overrides (and NPROC 1, the default), runs the commands
    of AVE's script of its kind with its own dataset in place of AVE's (--dataset, run ids, run folders): what
    runs AVE's scripts end to end (above) covers MUSIC's and Kinetics'. The scripts run with a PYTHON that
    records each command instead of running it."""
    root = tmp_path / "root"
    for sub in ("frames", "audio"):
        (root / "data" / sub).mkdir(parents=True)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=PY))
    fake.chmod(0o755)
    lists = ["--list_train", "train.csv", "--list_val", "val.csv", "--list_test", "test.csv"]
    commands = {}
    for up, ds in DATASETS.items():
        for kind, extra in STEPS:
            record = tmp_path / f"{kind}_{up}.jsonl"
            env = dict(_env(tmp_path, root), PYTHON=str(fake), RECORD=str(record))
            env.pop("NPROC", None)
            proc = subprocess.run(["bash", str(REPO / "scripts" / f"{kind}_{up}.sh"), *lists, *TINY, *extra],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"{kind}_{up}.sh:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            calls = [json.loads(line) for line in record.read_text().splitlines()]
            mains = [c for c in calls if c[:2] != ["-m", "utils.rundir"]]
            assert mains and all(c[0].startswith("main_") for c in mains), calls
            commands[up, kind] = [[re.sub(rf"\b{ds}\b", "ave", a) for a in c] for c in calls]
            if up == "AVE":  # the dataset's flag, and every run id and folder, name it
                assert all(c[c.index("--dataset") + 1] == ds for c in mains)
                assert all(c[c.index("--id") + 1].startswith(f"{ds}-") for c in mains)
    for kind, _ in STEPS:
        assert commands["MUSIC", kind] == commands["AVE", kind], kind
        assert commands["Kinetics", kind] == commands["AVE", kind], kind
    # the tiny overrides reach every main (after the script's own flags: the last word wins)
    for kind, _ in STEPS:
        for c in commands["AVE", kind]:
            if c[0].startswith("main_"):
                at = [i for i in range(len(c)) if c[i:i + len(TINY)] == TINY]
                assert at and at[0] > c.index("--id"), (kind, c)


def test_scripts_refuse_a_missing_data_root(tmp_path):
    env = _env(tmp_path, tmp_path / "nowhere")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "train_attack_AVE.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nowhere" in proc.stderr


def _run(cmd: list, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=local_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_study(background_studies):
    """One finished --quick study (5 clips per class) shared by the tests of this module: (root, first call).
    Run one job after the other in one process (the local launcher's default), started with the session
    (tests/studies.py); the custom-dataset study below runs the pool (--jobs 2)."""
    root, run = background_studies["quick"]
    proc = run.wait()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root, proc


def test_demo_quick_study_end_to_end(quick_study):
    root, _ = quick_study
    out = root / "study"
    cmd = study_cmd(root)
    report = (out / "report.md").read_text()
    for heading in ("Unimodal vs audio-visual", "FGSM", "PGD", "AutoAttack", "Fusion heads under PGD", "Defenses",
                    "Robustness surface", "What the numbers say", "Provenance", "Commands"):
        assert heading in report, heading
    # statistics: intervals on accuracies, McNemar p-values, the number of comparisons; headers in words
    assert "[95% CI]" in report and "exact McNemar" in report and "paired comparisons were made" in report
    assert "PGD-10 on audio and visual, eps 0.006 each" in report and "pgd_both_acc" not in report
    for model in ("audio", "visual", "concat"):
        assert (out / f"surface_{model}.png").is_file() and f"surface_{model}.png" in report
    assert (StudyRecord(out).eval_dir("concat", "main") / "per_sample.json").is_file()
    for model in ("audio", "visual", "concat", "sum", "film_av", "gated_av", "attention", "MinSim + banks",
                  "PGD adversarial training"):
        assert f"| {model}" in report, model
    html = (out / "report.html").read_text()
    assert "<table>" in html and "What the numbers say" in html
    # concat's newest evaluation is its robustness surface; the examples belong to its paper-grid evaluation
    for run in ("concat", "attention"):
        rd = RunDir(out / run)
        assert sum((rd.eval_dir(e) / "examples" / "index.html").is_file() for e in rd.eval_ids()) == 1, run
    pages = [out / "report.html"] + sorted(out.glob("*/evals/*/examples/index.html"))
    assert len(pages) == 3
    if shutil.which("chromium") or Path("/usr/bin/chromium").is_file():  # scripts/test.sh installs it (root)
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(REPO / "scripts" / "check_html.py"),
                               "--check", *map(str, pages)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # a second call reuses every finished step
    first = json.loads((out / "timings.json").read_text())
    before = RunDir(out / "concat").eval_ids()
    again = _run(cmd)
    assert again.returncode == 0 and "[run] train" not in again.stderr + again.stdout
    assert "already finished with this configuration" in again.stdout  # evaluations reused, not recomputed
    assert RunDir(out / "concat").eval_ids() == before
    # the study's record names the paper grid and the robustness surface of concat, both reused
    steps = json.loads((out / "study.json").read_text())["steps"]
    assert {steps["attack concat"]["eval_id"], steps["surface concat"]["eval_id"]} <= set(before)
    # the resumed study still reports each step's time in the call that did it, and says what it reused
    second = json.loads((out / "timings.json").read_text())
    second.pop("index"), first.pop("index")  # the index CSVs are rebuilt on every call (a fraction of a second)
    assert second == first
    timings = (out / "report.md").read_text().split("## Timings (s)")[1]
    assert f"train audio: {first['train audio']:.1f}  (an earlier call; reused in this one)" in timings
    assert f"attack concat: {first['attack concat']:.1f}  (an earlier call; reused in this one)" in timings
    # the commands of finished steps are the ones that ran them, not a '--resume' of them
    commands = (out / "report.md").read_text().split("## Commands")[1].split("## Timings")[0]
    assert "--mode train" in commands and "--resume" not in commands
    # ... read from the runs' own records: each main with its own command line, never the study's
    assert "python main_attack.py" in commands and "python main_defense.py" in commands
    assert "run_study.py" not in commands
    assert json.loads((out / "concat" / "args.json").read_text())["command"][0] == "main_attack.py"


def _test_clips(root: Path) -> int:
    return len((root / "index" / "test.csv").read_text().splitlines())


def test_study_report_reads_only_the_evaluations_the_study_ran(quick_study):
    """Other evaluations in a study's run folder (one clipped to 1 batch in normalized units, one with no attack)
    never reach the report: it reads the evaluations its steps recorded in study.json."""
    root, _ = quick_study
    out = root / "study"
    media = root / "media" / "data"
    extra = ["--dataset", "synthetic",
             "--list_train", str(root / "index" / "train.csv"), "--list_val", str(root / "index" / "val.csv"), "--list_test", str(root / "index" / "test.csv"),
             "--audio_path", str(media / "audio"), "--frame_path", str(media / "frames"), "--arch_sound", "anet_lite",
             "--arch_frame", "resnet10", "--arch_classifier", "concat", "--ckpt", str(out), "--id", "concat",
             "--mode", "eval", "--workers", "0", "--batch_size_per_gpu", "4", "--max_eval_batches", "1",
             "--no_progress"]
    for more in (["--attack_type", "fgsm", "--eps_unit", "normalized"], []):  # in this process: no second start
        assert run_cli(main_attack.main, extra + more) == 0
    stray = set(RunDir(out / "concat").eval_ids()[-2:])
    assert run_cli(study.main, study_cmd(root)[2:]) == 0
    steps = json.loads((out / "study.json").read_text())["steps"]
    assert not stray & {s.get("eval_id") for s in steps.values()}
    report = (out / "report.md").read_text()
    intro = report.split("## Unimodal")[0]
    n = _test_clips(root)
    assert f"; {n} test clips)" in intro and "input units" in intro and "normalised" not in intro
    recorded = RunDir(out / "concat").eval_dir(steps["attack concat"]["eval_id"])
    rows = json.loads((recorded / "results.json").read_text())
    assert rows[0]["n_samples"] == n and f"on {n} paired clips" in report


def test_a_changed_study_setting_is_refused_and_nothing_is_written(quick_study, capsys):
    root, _ = quick_study
    out = root / "study"
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}  # study.json, report.md, timings.json
    runs = sorted(p.name for p in out.iterdir())
    code = run_cli(study.main, study_cmd(root, "--epochs", "5", "--epochs_unimodal", "7")[2:])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "--epochs 5 (recorded 1)" in err[0] and "--epochs_unimodal 7 (recorded 1)" in err[0]
    assert "new --out" in err[0] and str(out / "study.json") in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files
    assert sorted(p.name for p in out.iterdir()) == runs
    assert json.loads((out / "audio" / "args.json").read_text())["num_epoch"] == 1


def _wait_for_fake_slurm(fake: Path, timeout: float = 900) -> dict:
    """Wait until every job submitted to the fake scheduler has an outcome; {job id: ok|failed|never}."""
    t0 = time.time()
    while True:
        jobs = [p.stem for p in (fake / "jobs").glob("*.json")]
        done = {j: (fake / "jobs" / f"{j}.status").read_text() for j in jobs
                if (fake / "jobs" / f"{j}.status").is_file()}
        if len(done) == len(jobs):
            return done
        assert time.time() - t0 < timeout, f"fake slurm jobs still running after {timeout} s: {sorted(set(jobs) - set(done))}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm_study(background_studies):
    """(root, the submitting call) of the quick study submitted to the fake scheduler (started in the background
    with the session, tests/studies.py); its jobs may still be running."""
    root, run = background_studies["slurm"]
    return root, run.wait()


def test_slurm_launcher_under_a_fake_scheduler_gives_the_local_report(quick_study, slurm_study):
    """--launcher slurm with fake sbatch on PATH: the scripts' dependencies, torchrun line and array indices,
    and the same report as --launcher local; a second call submits only the report."""
    root, _ = quick_study
    sroot, proc = slurm_study
    fake, out = sroot / "fake", sroot / "slurm_study"
    cmd, env = slurm_cmd(sroot), slurm_env(fake)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outcome = _wait_for_fake_slurm(fake)  # sbatch returned at once; the jobs ran as their dependencies allowed
    jobs_log = (fake / "jobs.log").read_text() if (fake / "jobs.log").is_file() else ""
    subs = [json.loads(line) for line in (fake / "submissions.jsonl").read_text().splitlines()]
    assert all(outcome[s["id"]] == "ok" for s in subs), jobs_log[-5000:]
    assert all(s["args"][:5] == ["--parsable", "--partition", "debug", "--time", "10"] for s in subs)
    by_name = {s["script"].split("--job-name=study-")[1].split("\n")[0]: s for s in subs}
    train = by_name["train_concat"]
    assert 'torchrun --standalone --nproc_per_node "$NPROC" main_attack.py' in train["script"]
    # concat trains after the unimodal models (it starts from their nets) and the data
    deps = [a for a in train["args"] if a.startswith("--dependency=")][0].split(":")[1:]
    assert sorted(deps, key=int) == sorted([by_name["train_audio"]["id"], by_name["train_visual"]["id"],
                                            by_name["data"]["id"]], key=int)
    evals = by_name["evals_after_train_concat"]
    assert "--array=0-1" in evals["args"] and f"--dependency=afterok:{train['id']}" in evals["args"]
    assert "0) " in evals["script"] and "--job 'attack concat'" in evals["script"]
    assert "--job 'surface concat'" in evals["script"]
    report = by_name["report"]
    waits = [a for a in report["args"] if a.startswith("--dependency=")][0].split(":")[1:]
    assert set(waits) == {s["id"] for s in subs if s is not report}
    assert sorted(p.name for p in (out / "slurm").glob("*.sh")) == sorted(f"{n}.sh" for n in by_name)
    # the data steps (one after the other anyway) are one process: the study's start-up is paid once for them
    data = by_name["data"]["script"]
    assert data.count("scripts/run_study.py") == 1, data
    assert all(f"--job {n}" in data for n in ("generate", "frames", "audio", "index")), data
    # the same report as the local study: everything up to the commands and timings
    # (masked: evaluation folder ids, which name each evaluation's time, and the rows' 'time (s)' cells)
    def body(path: Path) -> str:
        text = re.sub(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]+-[0-9A-Za-z_]+", "<eval id>",
                      path.read_text().split("## Provenance")[0])
        lines, timed = [], False
        for line in text.splitlines():
            timed = line.endswith("| time (s) |") or (timed and line.startswith("|"))
            lines.append(re.sub(r"\| [0-9.]+ \|$", "| <s> |", line) if timed else line)
        return "\n".join(lines)

    assert body(out / "report.md") == body(root / "study" / "report.md")
    # a second call submits only the report (every other output is there)
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert set(_wait_for_fake_slurm(fake).values()) == {"ok"}
    subs2 = [json.loads(line) for line in (fake / "submissions.jsonl").read_text().splitlines()][len(subs):]
    assert [s["script"].split("--job-name=study-")[1].split("\n")[0] for s in subs2] == ["report"]


@pytest.fixture(scope="module")
def own_study(background_studies):
    """(root, the call) of the custom-dataset study (started in the background with the session, tests/studies.py)."""
    root, run = background_studies["own"]
    return root, run.wait()


def test_a_study_on_a_dataset_of_your_own_with_two_seeds(own_study, tmp_path):
    """run_study.py --dataset custom --categories ... --list_* --preset quick --seeds 0 1 --sections all --jobs 2 on
    videos' media made here: the full report with every study section, results_long.csv with both seeds of the
    headline models, one run folder per seed, the pool's records; a list with a class outside --categories exits 2
    before anything is written."""
    root, proc = own_study
    cats, out = OWN_CATS, root / "study"
    m = {k: root / "own" / f"{k}.csv" for k in ("train", "val", "test")}
    m["root"] = root / "own"
    bad_out = tmp_path / "study"
    bad = _run(own_study_cmd(m, bad_out, cats[:3]))  # delta's clips are outside --categories
    assert bad.returncode == 2 and "delta" in bad.stderr and not bad_out.exists(), bad.stderr[-2000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # --jobs 2: two worker processes of one thread each ran the jobs; each job's record was gathered into study.json
    assert "[pool] 2 worker(s), 1 thread(s) each" in proc.stdout + proc.stderr
    steps = json.loads((out / "study.json").read_text())["steps"]
    assert {p.stem for p in (out / "steps").glob("*.json")} == {n.replace(" ", "_") for n in steps}
    assert all("eval_id" in steps[n] for n in steps if n.startswith(("attack ", "surface ", "autoattack ")))
    report = (out / "report.md").read_text()
    assert report.startswith("# Audio-visual robustness on custom (preset quick)")
    assert "Dataset custom, preset quick" in report and "2 seeds: 0, 1" in report
    assert json.loads((out / "study.json").read_text())["seeds"] == [0, 1]
    with open(out / "results_long.csv") as f:
        rows = list(csv.DictReader(f))
    for model in ("audio", "visual", "concat"):
        assert {r["seed"] for r in rows if r["model"] == model} == {"0", "1"}
        assert (out / model / "seed0" / "done_train.json").is_file()
        assert (out / model / "seed1" / "done_train.json").is_file()
    args = json.loads((out / "concat" / "seed1" / "args.json").read_text())
    assert args["dataset"] == "custom" and args["categories"] == cats and args["seed"] == 1
    # --sections all: every study section ran on this data and has its part of the report, from the study's record
    for title in [SECTIONS.get(n).title for n in SECTIONS.names()]:
        assert f"## {title}" in report, title
    assert "Not run in this study (scripts/run_study.py --sections" not in report
    kinds = {r["evaluation"] for r in rows}
    assert {"missing", "corruptions", "misalignment", "universal", "time"} <= kinds, kinds
