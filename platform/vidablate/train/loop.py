"""The shared Ray Train worker loop: DDP over gloo (CPU) or NCCL (GPU), bf16 autocast on GPU,
base/novel evaluation every epoch, and a resumable checkpoint every ``checkpoint_every`` epochs.

Ray Train picks the backend: ``TorchTrainer`` uses NCCL when ``use_gpu`` and gloo otherwise.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import ExperimentConfig, TrainConfig
from ..data.protocols import build_zero_shot
from ..model import VideoCLIP, build_model
from .checkpoint import load_state, save_state
from .metrics import harmonic_mean


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizers(
    model: VideoCLIP, cfg: TrainConfig
) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
    """One optimizer per parameter group (isclip §III default: Adam for the CLIP visual tower,
    SGD for the new modules), one schedule each."""
    groups = model.param_groups()
    optimizers: dict[str, torch.optim.Optimizer] = {}
    lr = {"clip_visual": cfg.lr_visual, "clip_text": cfg.lr_text or cfg.lr_visual,
          "new": cfg.lr_new}
    kind = {"clip_visual": cfg.visual_optimizer, "clip_text": cfg.visual_optimizer,
            "new": cfg.new_optimizer}
    for name, params in groups.items():
        if params:
            optimizers[name] = _optimizer(kind[name], params, lr[name], cfg)
    if not optimizers:
        raise ValueError("nothing to train: no trainable parameters for this configuration")
    if cfg.lr_schedule == "cosine":
        def factor(epoch: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    else:
        def factor(epoch: int) -> float:
            return 1.0
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in optimizers.items()}
    return optimizers, schedulers


def _optimizer(kind: str, params: list, lr: float, cfg: TrainConfig) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def _all_reduce(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
    return values


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
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) over ``names`` only; each rank scores a disjoint shard (no
    padding)."""
    model.eval()
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    k = min(5, len(names))
    for batch in DataLoader(shard, batch_size=batch_size):
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits, _ = model(batch["video"], batch.get("imu"), names)
        target = batch["label"] - label_offset
        topk = logits.float().topk(k, dim=-1).indices
        counts[0] += (topk[:, 0] == target).sum()
        counts[1] += (topk == target[:, None]).any(dim=-1).sum()
        counts[2] += target.numel()
    top1, top5, total = _all_reduce(counts).tolist()
    return 100.0 * top1 / max(total, 1.0), 100.0 * top5 / max(total, 1.0)


def evaluate_protocol(model: VideoCLIP, data: Any, cfg: ExperimentConfig, device: torch.device,
                      rank: int, world: int, autocast: bool) -> dict[str, float]:
    """The protocol's metrics: base_acc, novel_acc, hm (base/novel) or top1, top5 (closed set)."""
    bs = cfg.trainer.eval_batch_size
    base, base5 = evaluate(model, data.test_base, data.base_names, 0, bs, device, rank, world,
                           autocast)
    if data.test_novel is None:
        return {"top1": base, "top5": base5}
    novel, _ = evaluate(model, data.test_novel, data.novel_names, data.num_base, bs, device,
                        rank, world, autocast)
    return {"base_acc": base, "novel_acc": novel, "hm": harmonic_mean(base, novel)}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. ``loop_config``: {"experiment": dict, "mlflow_run_id": str|None}."""
    cfg = ExperimentConfig.from_dict(loop_config["experiment"]).validate()
    run_id = loop_config.get("mlflow_run_id")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.trainer.use_gpu else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(cfg.trainer.cpus_per_worker, 1))
    autocast = cfg.trainer.amp and device.type == "cuda"

    seed_everything(cfg.trainer.seed)  # identical init on every rank; data order from sampler
    data = build_zero_shot(cfg.data)
    model = build_model(cfg.model, cfg.data.num_frames).to(device)
    if cfg.trainer.epochs == 0:  # zero-shot: evaluate the initial model, train nothing
        metrics = {"epoch": 0, "world_size": world}
        metrics.update(evaluate_protocol(model, data, cfg, device, rank, world, autocast))
        ray.train.report(metrics)
        return
    optimizers, schedulers = make_optimizers(model, cfg.trainer)
    history: list[dict[str, float]] = []
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory, model, optimizers, schedulers)
        start_epoch, history = state["epoch"], state["history"]
        run_id = run_id or state["mlflow_run_id"]
    wrapped = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model

    per_worker = max(cfg.trainer.batch_size // max(world, 1), 1)
    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.trainer.seed, drop_last=True)
    loader = DataLoader(data.train, batch_size=per_worker, sampler=sampler, drop_last=True,
                        pin_memory=device.type == "cuda")

    for epoch in range(start_epoch, cfg.trainer.epochs):
        sampler.set_epoch(epoch)
        model.train()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, ce, kd, batches
        for batch in loader:
            batch = _to(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits, out = wrapped(batch["video"], batch.get("imu"), data.base_names)
            parts = model.loss(logits.float(), out, batch["label"], cfg.trainer.label_smoothing)
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            for opt in optimizers.values():
                opt.step()
            sums += torch.stack([parts["loss"].detach(), parts["ce"].detach(),
                                 parts.get("kd", torch.zeros((), device=device)).detach(),
                                 torch.ones((), device=device)]).double()
        for sched in schedulers.values():
            sched.step()
        sums = _all_reduce(sums)
        n = max(float(sums[3]), 1.0)
        metrics: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0]) / n,
            "train_ce": float(sums[1]) / n,
            "train_kd": float(sums[2]) / n,
            "world_size": world,
        }
        last = epoch + 1 == cfg.trainer.epochs
        if last or (epoch + 1) % cfg.trainer.eval_every == 0:
            metrics.update(evaluate_protocol(model, data, cfg, device, rank, world, autocast))
        history.append({**metrics, "finished_at": time.time()})
        if last or (epoch + 1) % cfg.trainer.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    save_state(tmp, model, optimizers, schedulers, epoch + 1, history, run_id)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=ckpt)
        else:
            ray.train.report(metrics)
