"""The loops shared by main_attack.py and main_defense.py: train one epoch, evaluate, extract features.

Batches are dicts from dataset.av_dataset.AVDataset: {"audio": (B,1,L), "visual": (B,3,T,H,W),
"label": (B,), "id": [...], "index": (B,)}. Models follow docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from dataset.batches import GAIN_KEY, to_model_floats
from models.av_model import av_cosine
from pipeline.objectives import Objective
from models.missing import dropout_mask
from utils import distributed as du
from utils.modes import model_mode

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """The options ``train_one_epoch`` reads (built from the ``RunConfig`` by ``pipeline.build.train_options``)."""

    minsim_weight: float = 0.0  # paper MinSim w = 1.0 (0.8 noted for KS); 0 = plain CE
    amp: bool = False
    channels_last: bool = False
    disp_iter: int = 20
    progress: bool = True
    # what a step minimises (pipeline/objectives.py: plain CE, Madry/TRADES/fast adversarial training, noise)
    objective: Objective = dataclasses.field(default_factory=Objective)
    # the head's training procedure (pipeline/procedures.py): ``prepare(inputs, labels) -> (inputs, targets)``
    # before the forward, ``loss(head, labels, targets)`` added to the loss after it
    procedure: Optional[Any] = None
    modality_dropout: float = 0.0  # per sample, the probability that one input is absent (models/missing.py)
    missing_fill: str = "zeros"  # what replaces the dropped feature (training "mean": the batch's mean feature)
    seed: int = 0  # seeds the modality-dropout draws (with the epoch)


class LogitsAndFeatures(nn.Module):
    """Wraps a model so one forward (through DDP) returns both logits and per-modality features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None,
                absent: Optional[Dict[str, torch.Tensor]] = None, fill: str = "zeros"):
        if absent:  # modality dropout: every input is still encoded (DDP sees every parameter used)
            feats = self.model.features_absent(audio=audio, visual=visual, absent=absent, fill=fill, encode_all=True)
        else:
            feats = self.model.features(audio=audio, visual=visual)
        return self.model.classify(feats), feats


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP and LogitsAndFeatures wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, LogitsAndFeatures)):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model.model
    return model


def to_inputs(batch: Dict[str, Any], device: torch.device, modalities, channels_last: bool = False):
    """The model's float inputs of a batch on ``device`` (raw uint8/int16 batches are converted there,
    dataset/batches.py; float ones are moved); inputs the model does not use are dropped."""
    inputs: Dict[str, torch.Tensor] = {}
    floats = to_model_floats({k: v for k, v in batch.items() if k in (*modalities, GAIN_KEY)}, device)
    for m in modalities:
        t = floats[m]
        if m == "visual" and channels_last and t.dim() == 5:
            t = t.contiguous(memory_format=torch.channels_last_3d)
        inputs[m] = t
    return inputs


def autocast_ctx(device: torch.device, amp: bool):
    """bf16 autocast on ``device`` when ``amp`` (runs refuse --amp on CPU at set-up; tests use CPU autocast)."""
    if amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def minsim_loss(feats: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cosine similarity between audio and visual features (the paper's MinSim term)."""
    try:
        return av_cosine(feats, required=True).mean()
    except ValueError as e:
        raise ValueError(f"--minsim_weight: {e}") from None


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                    epoch: int, opts: TrainConfig) -> Dict[str, float]:
    """One pass over ``loader``; ``model`` is a LogitsAndFeatures (optionally inside DDP).

    Each step follows ``opts.objective``: its examples (a training adversary or noise, fp32 outside autocast),
    then its loss terms (``ce`` and ``robust``, e.g. TRADES' beta * KL) plus MinSim. Returns the epoch's mean loss,
    CE, robust term, cosine and accuracy (on the CE term's inputs), summed over processes. A NaN/inf loss stops
    the run with an error naming the epoch and iteration.
    """
    model.train()
    bare = unwrap(model)
    # Metrics accumulate on the device (no per-step host sync); they are read every --disp_iter steps and at
    # the end of the epoch, where finiteness is checked for the steps since the last read.
    sums = torch.zeros(6, dtype=torch.float64, device=device)  # loss, ce, cos, robust, correct, n
    bad = torch.zeros((), dtype=torch.bool, device=device)
    last_read = 0
    it = tqdm(loader, desc=f"train {epoch}", disable=not (opts.progress and du.is_main()), leave=False)

    def read(upto: int) -> None:
        nonlocal last_read
        if bool(bad):  # one host sync per read
            where = f"iteration {upto}" if upto == last_read else f"iterations {last_read}..{upto}"
            raise FloatingPointError(f"loss is not finite at epoch {epoch}, {where}: "
                                     "lower the learning rates or check the inputs")
        last_read = upto + 1

    # modality dropout draws from its own generator (seed and epoch), never from the global RNG: the data
    # order and augmentation of a run are the same with and without it
    drop_gen = torch.Generator().manual_seed(opts.seed * 100003 + epoch) if opts.modality_dropout > 0 else None
    i = -1
    for i, batch in enumerate(it):
        inputs = to_inputs(batch, device, bare.modalities, opts.channels_last)
        labels = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=False):  # attacks stay fp32 (README, "Precision")
            examples = opts.objective.examples(inputs, labels, epoch, i)  # attacks restore train mode afterwards
        targets: Dict[str, torch.Tensor] = {}
        if opts.procedure is not None:
            with torch.autocast(device.type, enabled=False):
                examples["train"], targets = opts.procedure.prepare(examples["train"], labels)
        if drop_gen is not None:  # the cross-entropy's inputs lose one modality per dropped sample
            absent = dropout_mask(labels.numel(), tuple(bare.modalities), opts.modality_dropout, drop_gen)
            examples["train"] = {**examples["train"], "absent": {m: v.to(device) for m, v in absent.items()},
                                 "fill": opts.missing_fill}
        with autocast_ctx(device, opts.amp):
            out = opts.objective.loss(model, examples, labels)
            logits, ce = out.logits, out.ce
            cos = minsim_loss(out.feats) if opts.minsim_weight > 0 else torch.zeros((), device=device)
            loss = ce + out.robust + opts.minsim_weight * cos
            if opts.procedure is not None:  # reads the head's auxiliary outputs of this forward
                loss = loss + opts.procedure.loss(bare.head, labels, targets)
        bad |= ~torch.isfinite(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = labels.numel()
        # float64 before the product by n: the same numbers as float(loss) * n on the host
        step = torch.cat([torch.stack([loss.detach(), ce.detach(), cos.detach().float(),
                                       out.robust.detach().float()]).double() * n,
                          torch.stack([(logits.detach().argmax(1) == labels).sum().double(),
                                       torch.tensor(float(n), dtype=torch.float64, device=device)])])
        sums += step
        if opts.disp_iter and i % opts.disp_iter == 0:
            read(i)
            vals = (step[:4] / n).tolist()
            log.info("epoch %d iter %d/%d loss %.4f ce %.4f cos %.4f robust %.4f", epoch, i, len(loader), *vals)
            it.set_postfix(loss=f"{vals[0]:.3f}")
    read(i)
    sums = du.all_reduce_sum(sums).cpu()
    n = max(sums[5].item(), 1.0)
    return {"loss": sums[0].item() / n, "ce": sums[1].item() / n, "cos": sums[2].item() / n,
            "robust": sums[3].item() / n, "acc": sums[4].item() / n, "n": int(sums[5].item())}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp: bool = False, progress: bool = True,
             desc: str = "eval", max_batches: int = 0, channels_last: bool = False, keep_preds: bool = False
             ) -> Dict[str, Any]:
    """Clean accuracy and CE over ``loader``; counts are summed over processes (exact under DDP).

    ``keep_preds``: the result's ``preds`` holds this process's predicted class per dataset index
    (``batch["index"]``; -1 for indices it did not see), for the attack grid's clean rows."""
    bare = unwrap(model)
    preds: Optional[list] = [] if keep_preds else None
    with model_mode(bare, training=False):
        sums = _evaluate_sums(bare, loader, device, amp, progress, desc, max_batches, channels_last, preds)
    sums = du.all_reduce_sum(sums)
    n = sums[2].item()
    if n == 0:
        raise RuntimeError(f"{desc}: the loader yielded no samples")
    res = {"loss": sums[0].item() / n, "acc": sums[1].item() / n, "n": int(n),
           "cos": sums[3].item() / n if not math.isnan(sums[3].item()) else float("nan")}
    if preds is not None:
        index = torch.cat([i for i, _ in preds]).cpu()  # predictions are kept on the host, by dataset index
        res["preds"] = torch.full((int(index.max()) + 1,), -1, dtype=torch.long, device=index.device)
        res["preds"][index] = torch.cat([p for _, p in preds]).cpu()
    return res


def _evaluate_sums(bare: nn.Module, loader, device: torch.device, amp: bool, progress: bool, desc: str,
                   max_batches: int, channels_last: bool = False, preds: Optional[list] = None) -> torch.Tensor:
    # ce, correct, n, cos, summed on the device: no host synchronisation per batch
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for i, batch in enumerate(tqdm(loader, desc=desc, disable=not (progress and du.is_main()), leave=False)):
        if max_batches and i >= max_batches:
            break
        inputs = to_inputs(batch, device, bare.modalities, channels_last)
        labels = batch["label"].to(device)
        with autocast_ctx(device, amp):
            feats = bare.features(**inputs)
            logits = bare.classify(feats).float()
        cos = av_cosine(feats)
        cos = cos.sum() if cos is not None else torch.full((), float("nan"), device=device)
        pred = logits.argmax(1)
        if preds is not None:
            preds.append((torch.as_tensor(batch["index"]).cpu(), pred))
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                             (pred == labels).sum().double(),
                             torch.full((), labels.numel(), dtype=torch.float64, device=device), cos.double()])
    return sums


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: torch.device, progress: bool = True) -> Dict[str, Any]:
    """Clean eval-mode features of every sample of ``loader`` (no augmentation: pass an eval dataset)."""
    bare = unwrap(model)
    out: Dict[str, list] = {m: [] for m in bare.modalities}
    labels, ids, index = [], [], []
    with model_mode(bare, training=False):
        for batch in tqdm(loader, desc="features", disable=not progress, leave=False):
            feats = bare.features(**to_inputs(batch, device, bare.modalities))
            for m in bare.modalities:
                out[m].append(feats[m].float().cpu())
            labels.append(batch["label"])
            ids.extend(batch["id"])
            index.append(batch["index"])
    order = torch.argsort(torch.cat(index))
    result: Dict[str, Any] = {m: torch.cat(v)[order] for m, v in out.items()}
    result["labels"] = torch.cat(labels)[order]
    result["ids"] = [ids[i] for i in order.tolist()]
    return result
