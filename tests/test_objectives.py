"""Training objectives (pipeline/objectives.py): each loss on a hand-checked case, the training adversaries' steps
(TRADES' KL ascent, fast AT's FGSM from a random start) recomputed by hand, the modality schedule, the noise of
--noise_train, and the flags that are refused with exit 2 before any work."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import main_attack
from pipeline.engine import LogitsAndFeatures, TrainConfig, train_one_epoch
from pipeline.objectives import (FAST_ALPHA_RATIO, TRADES_START_RATIO, TRADES_STEP_RATIO, TRADES, FastAT,
                                 GaussianNoiseTraining, MadryAT, ModalitySchedule, Objective, TradesAdversary,
                                 objective_for)
from tests.conftest import ToyAV, ToyFeaturesAV, run_argv
from utils.errors import run_cli

CATS = ["alpha", "beta", "gamma"]
MEDIA = dict(clips_per_class=2, num_frames=2, seconds=1.0, img_hw=(20, 20), seed=4)  # the `media` fixture's
EPS = {"audio": 0.02, "visual": 0.03}


def batch(n: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = {"audio": torch.rand(n, 1, 48, generator=gen) * 2 - 1, "visual": torch.rand(n, 3, 8, 8, generator=gen)}
    return x, torch.arange(n) % 4


def cfg(**kw):
    base = dict(adv_train="pgd", train_budget=dict(EPS), train_attack_steps=2, eps_unit="input", seed=5,
                adv_train_modality="both", trades_beta=6.0, train_noise=None)
    return SimpleNamespace(**{**base, **kw})


def test_trades_loss_is_ce_plus_beta_kl_by_hand():
    torch.manual_seed(0)
    model = ToyFeaturesAV(("audio", "visual"))
    net = LogitsAndFeatures(model)
    x = {"audio": torch.randn(5, 1, 32), "visual": torch.rand(5, 3, 4, 4)}
    x_adv = {"audio": -3 * x["audio"], "visual": x["visual"].flip(0)}  # any fixed x'
    y = torch.tensor([0, 1, 2, 0, 1])
    obj = TRADES(EPS, ModalitySchedule("both", ("audio", "visual")), lambda eps: None, beta=2.5)
    out = obj.loss(net, {"train": x, "adv": x_adv}, y)
    with torch.no_grad():
        logits, logits_adv = model(**x).double(), model(**x_adv).double()
    p, q = logits.softmax(1), logits_adv.softmax(1)
    kl = (p * (p.log() - q.log())).sum(1).mean()  # KL(f(x) || f(x')) per sample, averaged
    ce = -logits.log_softmax(1)[torch.arange(5), y].mean()
    assert float(out.ce.detach()) == pytest.approx(float(ce), rel=1e-5)
    assert float(out.robust.detach()) == pytest.approx(2.5 * float(kl), rel=1e-4) and float(kl) > 1e-2
    # the gradient flows through both predictions (the authors' trades_loss does not detach f(x))
    (out.ce + out.robust).backward()
    assert model.enc_a.weight.grad.abs().sum() > 0


def test_trades_adversary_step_is_the_kl_ascent_by_hand():
    model = ToyAV(num_classes=4)
    x, y = batch()
    adv = TradesAdversary(model, EPS, steps=1, seed=11)(x, y)
    assert model.training  # mode restored
    gen = torch.Generator().manual_seed(11)
    model.eval()
    with torch.no_grad():
        target = model(**x).log_softmax(1)
    start = {m: torch.max(torch.min(x[m] + torch.randn(x[m].shape, generator=gen) * TRADES_START_RATIO * EPS[m],
                                    x[m] + EPS[m]), x[m] - EPS[m]) for m in ("audio", "visual")}
    start["audio"] = start["audio"].clamp(-1, 1)
    start["visual"] = start["visual"].clamp(0, 1)
    leaves = {m: s.clone().requires_grad_(True) for m, s in start.items()}
    kl = F.kl_div(model(**leaves).log_softmax(1), target, log_target=True, reduction="sum")
    grads = torch.autograd.grad(kl, [leaves["audio"], leaves["visual"]])
    for (m, lo, hi), g in zip((("audio", -1, 1), ("visual", 0, 1)), grads):
        want = (start[m] + TRADES_STEP_RATIO * EPS[m] * g.sign()).clamp(x[m] - EPS[m], x[m] + EPS[m]).clamp(lo, hi)
        assert torch.allclose(adv[m], want, atol=1e-6), m
        assert (adv[m] - x[m]).abs().max() <= EPS[m] + 1e-6
    # more steps raise the KL the inner maximisation maximises
    def kl_at(a):
        with torch.no_grad():
            return float(F.kl_div(model(**a).log_softmax(1), target, log_target=True, reduction="sum"))
    assert kl_at(TradesAdversary(model, EPS, steps=5, seed=11)(x, y)) > kl_at(start)


def test_fast_at_step_is_projected_fgsm_from_a_seeded_random_start():
    model = ToyAV(num_classes=4)
    x, y = batch(seed=1)
    obj = FastAT.from_config(cfg(adv_train="fast"), model)
    adv = obj.examples(x, y, epoch=1, step=0)["train"]
    gen = torch.Generator().manual_seed(5)
    model.eval()
    start = {}
    for m, (lo, hi) in (("audio", (-1, 1)), ("visual", (0, 1))):  # uniform in the ball, in the range
        noise = torch.empty_like(x[m]).uniform_(-1, 1, generator=gen)
        start[m] = (x[m] + noise * EPS[m]).clamp(x[m] - EPS[m], x[m] + EPS[m]).clamp(lo, hi)
    leaves = {m: s.clone().requires_grad_(True) for m, s in start.items()}
    ce = F.cross_entropy(model(**leaves), y, reduction="sum")
    grads = dict(zip(leaves, torch.autograd.grad(ce, list(leaves.values()))))
    for m, (lo, hi) in (("audio", (-1, 1)), ("visual", (0, 1))):
        want = (start[m] + FAST_ALPHA_RATIO * EPS[m] * grads[m].sign()).clamp(x[m] - EPS[m], x[m] + EPS[m])
        assert torch.allclose(adv[m], want.clamp(lo, hi), atol=1e-6), m
    # alpha = 1.25 eps > eps: most coordinates end on the ball's boundary
    assert ((adv["visual"] - x["visual"]).abs() > EPS["visual"] - 1e-6).float().mean() > 0.5


@pytest.mark.parametrize("kind", ["alternate", "random"])
def test_the_modality_schedule_attacks_the_expected_modality_per_batch(kind):
    model = ToyAV(num_classes=4)
    x, y = batch(seed=2)
    obj = MadryAT.from_config(cfg(adv_train_modality=kind), model)
    seen = []
    for step in range(12):
        adv = obj.examples(x, y, epoch=3, step=step)["train"]
        want = obj.schedule.pick(3, step)
        changed = tuple(m for m in ("audio", "visual") if not torch.equal(adv[m], x[m]))
        assert changed == want and len(want) == 1, (step, changed, want)
        other = "visual" if want == ("audio",) else "audio"
        assert adv[other] is x[other]  # the modality left out is the very tensor passed
        seen.append(want[0])
    if kind == "alternate":
        assert seen == ["audio", "visual"] * 6
    else:
        assert set(seen) == {"audio", "visual"}
        again = ModalitySchedule("random", ("audio", "visual"), seed=5)
        assert [again.pick(3, s)[0] for s in range(12)] == seen  # a function of (seed, epoch, step): resumable
        other_seed = ModalitySchedule("random", ("audio", "visual"), seed=6)
        assert [other_seed.pick(3, s)[0] for s in range(40)] != [again.pick(3, s)[0] for s in range(40)]
    both = MadryAT.from_config(cfg(), model).examples(x, y, 1, 0)["train"]
    assert all(not torch.equal(both[m], x[m]) for m in ("audio", "visual"))


def test_noise_training_adds_noise_of_the_given_sigma_unclipped():
    obj = GaussianNoiseTraining({"audio": 0.05, "visual": 0.25}, seed=3)
    x = {"audio": torch.zeros(64, 1, 512), "visual": torch.full((16, 3, 2, 16, 16), 0.5)}
    out = obj.examples(x, torch.zeros(64), epoch=1, step=0)["train"]
    for m, s in (("audio", 0.05), ("visual", 0.25)):
        d = out[m] - x[m]
        assert float(d.std()) == pytest.approx(s, rel=0.02)  # 5 standard errors of the estimate
        assert abs(float(d.mean())) < 5 * s / d.numel() ** 0.5
    assert float(out["visual"].min()) < 0 and float(out["visual"].max()) > 1  # not clipped to [0, 1]
    assert torch.equal(obj.examples(x, None, 1, 0)["train"]["visual"], out["visual"])  # same (epoch, step): same
    assert not torch.equal(obj.examples(x, None, 1, 1)["train"]["visual"], out["visual"])
    only_audio = GaussianNoiseTraining({"audio": 0.1}).examples(x, None, 1, 0)["train"]
    assert only_audio["visual"] is x["visual"]
    with pytest.raises(ValueError, match="> 0"):
        GaussianNoiseTraining({"audio": 0.0})


def test_objective_for_picks_by_name_and_the_engine_adds_the_robust_term():
    model = ToyFeaturesAV(("audio", "visual"))
    assert type(objective_for(cfg(adv_train=""), model)) is Objective
    assert type(objective_for(cfg(adv_train="trades"), model)) is TRADES
    assert type(objective_for(cfg(adv_train="fast"), model)) is FastAT
    assert type(objective_for(cfg(adv_train="mim"), model)) is MadryAT
    assert type(objective_for(cfg(adv_train="", train_noise={"visual": 0.1}), model)) is GaussianNoiseTraining
    torch.manual_seed(0)
    data = [{"audio": torch.rand(4, 1, 32) * 2 - 1, "visual": torch.rand(4, 3, 4, 4),
             "label": torch.tensor([0, 1, 2, 0])} for _ in range(2)]
    net = LogitsAndFeatures(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: both batches see the same weights
    res = train_one_epoch(net, data, opt, torch.device("cpu"), 1,
                          TrainConfig(progress=False, disp_iter=0, objective=objective_for(cfg(adv_train="trades"),
                                                                                           model)))
    assert res["robust"] > 0 and res["loss"] == pytest.approx(res["ce"] + res["robust"], rel=1e-6)
    plain = train_one_epoch(net, data, opt, torch.device("cpu"), 1, TrainConfig(progress=False, disp_iter=0))
    assert plain["robust"] == 0 and plain["ce"] == pytest.approx(res["ce"], rel=1e-6)  # TRADES' CE is the clean one


def argv(media, ckpt: Path, run_id: str, *extra: str):
    return run_argv(media, ckpt, run_id, *extra, cats=CATS, imgSize=16, arch_frame="resnet10",
                    batch_size_per_gpu=3, num_epoch=1)


@pytest.mark.parametrize("extra,needle", [
    (["--adv_train", "trades", "--trades_beta", "-1"], "--trades_beta"),
    (["--adv_train", "pgd", "--trades_beta", "3"], "--trades_beta"),
    (["--noise_train", "audio=0,visual=0.1"], "--noise_train"),
    (["--noise_train", "visual=-0.2"], "--noise_train"),
    (["--noise_train", "visual=0.1", "--adv_train", "pgd"], "--noise_train"),
    (["--noise_train", "audio=0.1", "--arch_classifier", "visual"], "--noise_train"),
    (["--adv_train_modality", "random"], "--adv_train_modality"),
    (["--adv_train", "fast", "--adv_train_modality", "alternate", "--arch_classifier", "audio",
      "--train_eps", "audio=0.01"], "--adv_train_modality"),
    (["--adv_train", "trades", "--adv_train_modality", "random", "--train_eps", "visual=0.01"],
     "--adv_train_modality"),
    (["--adv_train", "pgd", "--arch_classifier", "audio"], "--train_eps"),
])
def test_bad_training_flags_exit_2_before_any_work(media, tmp_path, capsys, extra, needle):
    code = run_cli(main_attack.main, argv(media, tmp_path, "bad", *extra))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "bad").exists()


def test_a_trades_run_records_its_objective_and_epoch_time(media, tmp_path):
    args = argv(media, tmp_path, "t", "--adv_train", "trades", "--trades_beta", "3", "--adv_train_modality",
                "alternate", "--train_attack_steps", "1")
    assert main_attack.main(args) == 0
    rec = json.loads((tmp_path / "t" / "args.json").read_text())
    assert rec["adv_train"] == "trades" and rec["trades_beta"] == 3.0 and rec["adv_train_modality"] == "alternate"
    rows = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["tag"] == "train"]
    assert len(train) == 1 and train[0]["seconds"] > 0 and train[0]["robust"] >= 0
    assert train[0]["loss"] == pytest.approx(train[0]["ce"] + train[0]["robust"], rel=1e-5)


def test_the_training_defences_section_mirrors_pgd_at(tmp_path, capsys):
    """run_study.py --sections training_defences: TRADES and fast AT trained with advtrain's command but for the
    objective, after the same unimodal nets, and evaluated with advtrain's PGD flags."""
    from tests.test_study_plan import _dry_run, _list_flags, _media

    m = _media(tmp_path / "own", ["a", "b", "c", "d", "e"])
    base = ["--dataset", "custom", "--categories", "a", "b", "c", "d", "e", "--data_root", str(m["root"]),
            *_list_flags(m), "--preset", "quick", "--seeds", "0", "1", "--out", str(tmp_path / "s"), "--dry_run"]
    jobs, _ = _dry_run(capsys, [*base, "--sections", "training_defences"])
    cmds = {name: cmd for _, name, cmd in jobs}
    for seed in (0, 1):
        at = cmds[f"train advtrain seed{seed}"]
        for model, objective in (("trades", "trades"), ("fastat", "fast")):
            mine = cmds[f"train {model} seed{seed}"]
            assert mine == at.replace("--adv_train pgd", f"--adv_train {objective}").replace(
                f"/advtrain --id seed{seed}", f"/{model} --id seed{seed}"), (mine, at)
            ev, base_ev = cmds[f"attack {model} seed{seed}"], cmds[f"attack advtrain seed{seed}"]
            assert ev == base_ev.replace(f"/advtrain --id seed{seed}", f"/{model} --id seed{seed}")


def test_the_training_defences_report_gives_accuracy_and_cost_relative_to_plain(tmp_path):
    from pipeline.sections.training_defences import TrainingDefences
    from utils.rundir import RunDir

    def row(acc):
        return {"attack": "pgd", "eps_audio": 0.006, "eps_visual": 0.006, "norm_audio": "Linf", "norm_visual": "Linf",
                "clean_acc": 0.8, "adv_acc": acc, "n_samples": 100}

    secs = {"concat": [2.0, 2.0], "advtrain": [6.0, 8.0], "trades": [10.0, 10.0], "fastat": [3.0, 3.0]}
    for run, values in secs.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.jsonl").write_text("".join(
            json.dumps({"tag": "train", "epoch": e + 1, "seconds": v}) + "\n" for e, v in enumerate(values)))
    view = SimpleNamespace(model_seeds=lambda run: [0], results=lambda run, seed=None: [row(0.1)],
                           kind_results=lambda run, kind, seed=None: [row(0.3 if run == "trades" else 0.2)],
                           run_folder=lambda run, seed: RunDir(tmp_path / run))
    blocks = TrainingDefences().report(view)
    acc, cost = [b.table for b in blocks if b.kind == "table"]
    assert [r["model"] for r in acc.rows] == ["plain (concat)", "PGD adversarial training", "TRADES (beta 6)",
                                              "fast AT (FGSM-RS)"]
    rel = {r["model"]: r["relative"] for r in cost.rows}
    assert rel == {"plain (concat)": 1.0, "PGD adversarial training": 3.5, "TRADES (beta 6)": 5.0,
                   "fast AT (FGSM-RS)": 1.5}
