"""The shared training loop: DDP over gloo (CPU) or NCCL (GPU), bf16 autocast on GPU,
base/novel evaluation every epoch, and a resumable checkpoint every ``checkpoint_every`` epochs.

It runs as a Ray Train worker (``train_loop_per_worker``; Ray Train picks the backend:
``TorchTrainer`` uses NCCL when ``use_gpu`` and gloo otherwise) or in a Ray Tune trial's own
process (``train_loop_in_trial``, one worker); ``session`` holds what differs.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..config import ExperimentConfig, TrainConfig
from ..data import cache
from ..data.protocols import (
    PROTOCOL_METRICS,
    ProtocolData,
    build_protocol,
    protocol_metrics,
    synthetic_spec,
)
from ..model import VideoCLIP, build_model
from .averaging import EpochAverage
from .checkpoint import load_state, save_state
from .diagnostics import GradNorm, ProbeSet, has_imu_modules
from .keys import (
    DIVERGED_KEY,
    HISTORY_KEY,
    KSHOT_KEY,
    LOOP_TIME_KEY,
    NODE_KEY,
    REPLAYED_KEY,
)
from .session import Session, TrainSession, TrialSession, node_id
from .step import train_step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizers(
    model: VideoCLIP, cfg: TrainConfig, steps_per_epoch: int = 1
) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
    """One optimizer per parameter group (isclip §III default: Adam for the CLIP visual tower,
    SGD for the new modules), one schedule each; ``steps_per_epoch`` places a per-step
    schedule (``trainer.schedule_unit=step``)."""
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    optimizers: dict[str, torch.optim.Optimizer] = {}
    lr = {"clip_visual": cfg.lr_visual, "clip_text": cfg.lr_text or cfg.lr_visual,
          "new": cfg.lr_new}
    kind = {"clip_visual": cfg.visual_optimizer, "clip_text": cfg.visual_optimizer,
            "new": cfg.new_optimizer}
    for name, params in groups.items():
        if params:
            optimizers[name] = _optimizer(kind[name], _decay_groups(params, names, cfg),
                                          lr[name], cfg)
    if not optimizers:
        raise ValueError("nothing to train: no trainable parameters for this configuration")

    def factor(t: int) -> float:
        return lr_factor(t, cfg, steps_per_epoch)

    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in optimizers.items()}
    return optimizers, schedulers


def _decay_groups(params: list, names: dict[int, str], cfg: TrainConfig) -> list:
    """The parameters as one group, or (``trainer.weight_decay_skip``) a decayed group and one
    without decay (1-D tensors, and with ``1d_pos`` positional embeddings)."""
    if cfg.weight_decay_skip == "none" or not cfg.weight_decay:
        return params

    def skip(p: torch.Tensor) -> bool:
        return p.dim() <= 1 or (cfg.weight_decay_skip == "1d_pos"
                                and "positional_embedding" in names.get(id(p), ""))

    return [{"params": [p for p in params if not skip(p)]},
            {"params": [p for p in params if skip(p)], "weight_decay": 0.0}]


def lr_factor(t: int, cfg: TrainConfig, steps_per_epoch: int = 1) -> float:
    """Learning-rate multiplier at epoch ``t`` (``schedule_unit=epoch``) or optimizer step
    ``t`` (``step``, with ``steps_per_epoch``): linear warm-up over ``warmup_epochs``, then
    constant or cosine from 1 down to ``min_lr_ratio`` (omniclip Table 1; X-CLIP's and STDD's
    official schedules with the step-unit knobs)."""
    warmup = cfg.warmup_epochs
    if cfg.schedule_unit == "step":
        elapsed = t / max(steps_per_epoch, 1)
        if elapsed < warmup:
            return cfg.warmup_start + (1 - cfg.warmup_start) * elapsed / warmup
    else:
        elapsed = t
        if elapsed < warmup:
            return (elapsed + 1) / (warmup + 1)
    if cfg.lr_schedule != "cosine":
        return 1.0
    if cfg.cosine_after_warmup:
        progress = (elapsed - warmup) / max(cfg.epochs - warmup, 1)
    else:
        progress = elapsed / max(cfg.epochs, 1)
    progress = min(progress, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(kind: str, params: list, lr: float, cfg: TrainConfig) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def _all_reduce(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
    return values


def loader_workers(cfg: ExperimentConfig) -> int:
    """DataLoader processes per Ray Train worker (``data.loader_workers``; -1 = auto)."""
    if cfg.data.loader_workers >= 0:
        return cfg.data.loader_workers
    return 0 if cfg.data.is_synthetic else max(cfg.trainer.cpus_per_worker - 1, 1)


def make_loader(dataset: Dataset, batch_size: int, workers: int, prefetch: int,
                device: torch.device, **kwargs: Any) -> DataLoader:
    """Decode in ``workers`` processes (kept alive across epochs), ``prefetch`` batches ahead,
    into pinned memory on GPU so host-to-device copies overlap compute."""
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": prefetch}
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      pin_memory=device.type == "cuda", **extra, **kwargs)


def score_views(logits: torch.Tensor, batch: int, views: int, average: str) -> torch.Tensor:
    """[B*V, C] per-view logits -> [B, C] clip scores: mean of softmax (``prob``, X-CLIP's
    multi-view inference) or mean of logits (``logit``)."""
    per_view = logits.float().view(batch, views, -1)
    if average == "prob":
        return per_view.softmax(dim=-1).mean(dim=1)
    return per_view.mean(dim=1)


@torch.no_grad()
def evaluate(
    model: VideoCLIP,
    dataset: Dataset,
    names: list[str],
    label_offset: int,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    autocast: bool = False,
    average: str = "prob",
    workers: int = 0,
    prefetch: int = 2,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) over ``names`` only, each rank scoring a disjoint shard (no
    padding). Multi-view items ([B, V, T, 3, H, W]) are scored per view and averaged. Clips
    that failed to decode are left out of the accuracy and counted in ``corrupt``."""
    model.eval()
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # top1, top5, clips, corrupt
    k = min(5, len(names))
    for batch in make_loader(shard, batch_size, workers, prefetch, device):
        batch = _to(batch, device)
        cached = "tokens" in batch  # features from the frozen-prefix cache
        video, imu = batch["tokens" if cached else "video"], batch.get("imu")
        b = video.shape[0]
        views = video.shape[1] if video.dim() == 6 - cached else 1
        if views > 1:
            video = video.flatten(0, 1)
            imu = imu.flatten(0, 1) if imu is not None else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits, _ = model(None, imu, names, video) if cached else model(video, imu, names)
        scores = score_views(logits, b, views, average)
        valid = batch["valid"].bool() if "valid" in batch else torch.ones(b, dtype=torch.bool,
                                                                           device=device)
        target = batch["label"] - label_offset
        topk = scores.topk(k, dim=-1).indices
        counts[0] += ((topk[:, 0] == target) & valid).sum()
        counts[1] += ((topk == target[:, None]).any(dim=-1) & valid).sum()
        counts[2] += valid.sum()
        counts[3] += (~valid).sum()
    top1, top5, total, corrupt = _all_reduce(counts).tolist()
    return {"top1": 100.0 * top1 / max(total, 1.0), "top5": 100.0 * top5 / max(total, 1.0),
            "clips": total, "corrupt": corrupt}


def evaluate_protocol(model: VideoCLIP, data: ProtocolData, cfg: ExperimentConfig,
                      device: torch.device, rank: int, world: int, autocast: bool,
                      workers: int | None = None) -> dict[str, float]:
    """The protocol's metrics (``vidablate.data.protocols.protocol_metrics``) plus
    ``corrupt_eval``, the clips that failed to decode."""
    results, corrupt = {}, 0.0
    for s in data.evals:
        scores = evaluate(model, s.dataset, s.names, s.label_offset, cfg.trainer.eval_batch_size,
                          device, rank, world, autocast, cfg.eval.average,
                          loader_workers(cfg) if workers is None else workers,
                          cfg.data.prefetch_factor)
        results[s.name] = (scores["top1"], scores["top5"])
        corrupt += scores["corrupt"]
    return {**protocol_metrics(data.protocol, results), "corrupt_eval": corrupt}


def mixer(cfg: ExperimentConfig, num_classes: int) -> Any:
    """torchvision's MixUp / CutMix (one drawn per batch when both are on), or None."""
    d = cfg.data
    ops = []
    if d.mixup:
        ops.append(v2.MixUp(alpha=d.mixup, num_classes=num_classes))
    if d.cutmix:
        ops.append(v2.CutMix(alpha=d.cutmix, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def train_batch(batch: dict[str, Any], mix: Any) -> tuple[torch.Tensor, Any, torch.Tensor,
                                                           float]:
    """(video, imu, target, weight) for one step: clips that failed to decode are dropped;
    when none is left the step still runs on the placeholders with weight 0, so every DDP
    rank takes part in the gradient all-reduce. Mixing makes targets soft [B, C]. Called on
    the loader's host batch, so the validity check never waits for the device."""
    video, imu, target = batch.get("video", batch.get("tokens")), batch.get("imu"), batch["label"]
    weight = 1.0
    valid = batch.get("valid")
    if valid is not None and not bool(valid.all()):
        keep = valid.bool()
        if bool(keep.any()):
            video, target = video[keep], target[keep]
            imu = imu[keep] if imu is not None else None
        else:
            weight = 0.0
    if mix is not None and video.shape[0] > 1:
        mixed, target = mix(tv_tensors.Video(video), target)
        video = mixed.as_subclass(torch.Tensor)
    return video, imu, target, weight


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose epoch can start after the first ``skip`` indices of this rank,
    so a run restored from a mid-epoch (just-in-time) checkpoint continues the same order."""

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[getattr(self, "skip", 0):])

    def __len__(self) -> int:
        return super().__len__() - getattr(self, "skip", 0)


def _jit_checkpoint(session: Session, model: VideoCLIP, optimizers: dict, schedulers: dict,
                    epoch: int, step: int, sums: torch.Tensor, history: list,
                    run_id: str | None, average: EpochAverage | None = None) -> None:
    """A node is about to be preempted: save mid-epoch state now and keep training; the
    restarted run resumes at this step instead of at the epoch's start. The running loss sums
    are saved summed over ranks (rank 0 takes them back on resume)."""
    total = _all_reduce(sums.clone())
    with tempfile.TemporaryDirectory() as tmp:
        if session.rank == 0:
            save_state(tmp, model, optimizers, schedulers, epoch, history, run_id, step=step,
                       partial=total.tolist(),
                       epoch_average=average.state_dict() if average else None)
        session.report({"epoch": epoch, "jit_checkpoint_step": step},
                       tmp if session.rank == 0 else None)


def use_feature_cache(options: dict[str, Any] | None, cfg: ExperimentConfig, model: VideoCLIP,
                      data: ProtocolData, device: torch.device, rank: int, autocast: bool
                      ) -> tuple[ProtocolData, bool]:
    """Switch the trial's datasets to the frozen-prefix feature cache when its plan allows
    (``vidablate.data.cache.plan``). The sweep driver builds the entries before the trial
    starts; entries still missing (an HPO trial sampled a new prefix, a part was deleted) are
    built here by rank 0 while the other ranks wait. ``options``: {"mode", "root"}."""
    options = options or {}
    p = cache.plan(cfg, model, data, options.get("root"), options.get("mode", "off"))
    if not p.use:
        if options.get("mode") == "require":
            raise cache.CacheError(f"cache=require but this trial cannot use it: {p.reason}")
        return data, False
    if rank == 0:
        cache.build_local(p, data, model.frame_encoder, device, autocast,
                          cfg.trainer.eval_batch_size, loader_workers(cfg))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    return cache.wrap(data, p), True


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. ``loop_config``: {"experiment": dict, "mlflow_run_id": str|None,
    "cache": {"mode", "root"} (optional; no cache without it)}."""
    run_loop(loop_config, TrainSession())


def train_loop_in_trial(loop_config: dict[str, Any]) -> None:
    """The same loop in a Ray Tune trial's own process (``trainer.executor=trial``)."""
    run_loop(loop_config, TrialSession())


def run_loop(loop_config: dict[str, Any], session: Session) -> None:
    """Train and evaluate one trial, reporting through ``session`` (``loop_config`` as
    ``train_loop_per_worker``)."""
    cfg = ExperimentConfig.from_dict(loop_config["experiment"]).validate()
    run_id = loop_config.get("mlflow_run_id")
    rank, world = session.rank, session.world
    device = session.device(cfg.trainer.use_gpu)
    if device.type == "cpu":
        torch.set_num_threads(max(cfg.trainer.cpus_per_worker, 1))
    autocast = cfg.trainer.amp and device.type == "cuda"

    seed_everything(cfg.trainer.seed)  # identical init on every rank; data order from sampler
    data = build_protocol(cfg)
    model = build_model(cfg.model, cfg.data.num_frames).to(device)
    data, cached = use_feature_cache(loop_config.get("cache"), cfg, model, data, device, rank,
                                     autocast)
    workers = 0 if cached else loader_workers(cfg)  # cached features are memory-mapped reads
    once: dict[str, Any] = {"feature_cache": float(cached)}
    if data.kshot:
        once[KSHOT_KEY] = json.dumps(data.kshot, indent=1)
    if cfg.trainer.epochs == 0:  # zero-shot: evaluate the initial model, train nothing
        metrics = {"epoch": 0, "world_size": world, **once}
        metrics.update(evaluate_protocol(model, data, cfg, device, rank, world, autocast,
                                         workers))
        session.report(metrics)
        return
    assert data.train is not None
    accumulate = cfg.trainer.accumulation_steps
    per_worker = max(cfg.trainer.batch_size // max(world, 1) // accumulate, 1)
    steps_per_epoch = max(len(data.train) // max(world, 1) // per_worker // accumulate, 1)
    optimizers, schedulers = make_optimizers(model, cfg.trainer, steps_per_epoch)
    per_step = cfg.trainer.schedule_unit == "step"
    average = EpochAverage(model, cfg.trainer.epoch_average_start) \
        if cfg.trainer.epoch_average else None
    history: list[dict[str, float]] = []
    start_epoch = 0
    checkpoint = session.checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory, model, optimizers, schedulers)
        start_epoch, history = state["epoch"], state["history"]
        if average is not None and state.get("epoch_average"):
            average.load_state_dict(state["epoch_average"])
        run_id = run_id or state["mlflow_run_id"]
        if history:
            once[HISTORY_KEY] = json.dumps(history)
    wrapped = session.wrap(model)
    model.frame_encoder.set_activation_checkpointing(cfg.trainer.activation_checkpointing)
    if cfg.trainer.compile:  # compiling the DDP wrapper lets DDP's optimizer split graphs at
        # its gradient buckets; evaluation runs the plain module (no recompiles for eval shapes)
        wrapped = torch.compile(wrapped, mode=cfg.trainer.compile_mode)

    sampler = ResumableSampler(data.train, num_replicas=world, rank=rank, shuffle=True,
                               seed=cfg.trainer.seed, drop_last=True)
    resume_step, partial = 0, None
    if checkpoint is not None and state.get("step"):
        resume_step, partial = int(state["step"]), state.get("partial")
    loader = make_loader(data.train, per_worker, workers, cfg.data.prefetch_factor,
                         device, sampler=sampler, drop_last=True)
    mix = mixer(cfg, len(data.train_names))
    probe = ProbeSet(synthetic_spec(cfg.data, split_frames=False)) \
        if cfg.data.is_synthetic and has_imu_modules(model) else None
    imu_grad = GradNorm(getattr(model, "imu", None))
    if start_epoch >= cfg.trainer.epochs and history:
        # Restored from the final checkpoint (a sweep restarted from scratch over finished
        # trials): report the finished result again, marked so it is not logged twice.
        final = {k: v for k, v in history[-1].items() if k != "finished_at"}
        session.report({**final, REPLAYED_KEY: True, HISTORY_KEY: once[HISTORY_KEY]})
        return

    check_every = cfg.trainer.preemption_check_every
    for epoch in range(start_epoch, cfg.trainer.epochs):
        began = time.perf_counter()
        skip = resume_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip=skip * per_worker)
        if hasattr(data.train, "set_epoch"):  # cached fixed draws: epoch e reads draw e mod V
            data.train.set_epoch(epoch)
        model.train()
        sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, ce, kd, batches, bad
        if skip and partial and rank == 0:  # the epoch's sums over all ranks so far
            sums += torch.tensor(partial, dtype=torch.float64, device=device)
        jit_saved = False
        for step, batch in enumerate(loader, start=skip + 1):
            # decode validity and mixing are decided on the host copy: no device sync per step
            if "valid" in batch:
                sums[4] += int((~torch.as_tensor(batch["valid"]).bool()).sum())
            video, imu, target, weight = train_batch(batch, mix)
            video, target = video.to(device, non_blocking=True), target.to(device,
                                                                           non_blocking=True)
            imu = imu.to(device, non_blocking=True) if imu is not None else None
            boundary = step % accumulate == 0  # the last micro-batch of an optimizer step
            parts = train_step(wrapped, model, optimizers, video, imu, data.train_names, target,
                               device=device, cached=cached, autocast=autocast,
                               label_smoothing=cfg.trainer.label_smoothing,
                               weight=weight / accumulate, clip_norm=cfg.trainer.grad_clip_norm,
                               zero_grad=(step - 1) % accumulate == 0, step=boundary)
            if boundary:
                imu_grad.update()
            if per_step and boundary:
                for sched in schedulers.values():
                    sched.step()
            sums[:4] += torch.stack([parts["loss"].detach(), parts["ce"].detach(),
                                     parts.get("kd", torch.zeros((), device=device)).detach(),
                                     torch.ones((), device=device)]).double()
            if check_every and boundary and (step // accumulate) % check_every == 0 \
                    and not jit_saved and session.preempted():  # a barrier under Ray Train
                jit_saved = True
                _jit_checkpoint(session, model, optimizers, schedulers, epoch, step, sums,
                                history, run_id, average)
        if not per_step:
            for sched in schedulers.values():
                sched.step()
        sums = _all_reduce(sums)
        n = max(float(sums[3]), 1.0)
        if not math.isfinite(float(sums[0])):  # the same all-reduced value on every rank
            nan = dict.fromkeys(PROTOCOL_METRICS[cfg.data.protocol], math.nan)  # HPO needs them
            session.report({"epoch": epoch + 1, "world_size": world, **nan, DIVERGED_KEY: (
                f"train_loss is {float(sums[0]) / n} in epoch {epoch + 1}: the trial "
                f"diverged (lower the learning rates trainer.lr_visual={cfg.trainer.lr_visual}"
                f" / trainer.lr_new={cfg.trainer.lr_new})")})
            return
        if average is not None:
            average.update(epoch + 1)
        metrics: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0]) / n,
            "train_ce": float(sums[1]) / n,
            "train_kd": float(sums[2]) / n,
            "corrupt_train": float(sums[4]),
            "world_size": world,
            NODE_KEY: node_id(),
            **imu_grad.read(),
            **(once if epoch == start_epoch else {}),
        }
        last = epoch + 1 == cfg.trainer.epochs
        if last or (epoch + 1) % cfg.trainer.eval_every == 0:
            with average.applied() if average is not None else nullcontext():
                metrics.update(evaluate_protocol(model, data, cfg, device, rank, world,
                                                 autocast, workers))
                if probe is not None:
                    metrics.update(probe.measure(model, device))
        metrics[LOOP_TIME_KEY] = time.perf_counter() - began
        history.append({**{k: v for k, v in metrics.items() if k not in (KSHOT_KEY, HISTORY_KEY)},
                        "finished_at": time.time()})
        if last or (epoch + 1) % cfg.trainer.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    save_state(tmp, model, optimizers, schedulers, epoch + 1, history, run_id,
                               epoch_average=average.state_dict() if average else None,
                               experiment=loop_config["experiment"])
                session.report(metrics, tmp if rank == 0 else None)
        else:
            session.report(metrics)
