"""Resumable trial state: trainable tensors, optimizers, schedulers, epoch, RNG, MLflow run id.

Only trainable tensors are stored: the frozen backbone is rebuilt identically from the same
weights (or seed), and a fingerprint of the frozen tensors guards against a mismatch.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_FILE = "state.pt"


class CheckpointMismatch(RuntimeError):
    """The checkpoint does not belong to this model (different frozen weights or toggles)."""


def frozen_fingerprint(model: nn.Module) -> float:
    """A cheap fingerprint of the frozen tensors (sum of |w| over frozen parameters)."""
    total = 0.0
    for p in model.parameters():
        if not p.requires_grad:
            total += float(p.detach().abs().double().sum())
    return total


def rng_state() -> dict[str, Any]:
    """RNG states as plain tensors and tuples, so the file loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    directory: str | Path,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    epoch: int,
    history: list[dict[str, float]],
    mlflow_run_id: str | None,
    step: int = 0,
    partial: list[float] | None = None,
    epoch_average: dict[str, Any] | None = None,
    experiment: dict[str, Any] | None = None,
) -> Path:
    """Write everything needed to continue after ``epoch`` finished epochs and ``step`` batches
    of the next one (a just-in-time checkpoint on preemption; ``partial`` holds that epoch's
    running loss sums; ``epoch_average`` the running weight average, when one is kept;
    ``experiment`` the trial's resolved config, so ``vidablate predict`` rebuilds the model)."""
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    path = Path(directory) / STATE_FILE
    torch.save(
        {
            "trainable": trainable,
            "frozen_fingerprint": frozen_fingerprint(model),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "epoch": epoch,
            "history": history,
            "rng": rng_state(),
            "mlflow_run_id": mlflow_run_id,
            "step": step,
            "partial": list(partial or []),
            "epoch_average": epoch_average,
            "experiment": experiment,
        },
        path,
    )
    return path


def load_state(
    directory: str | Path,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
) -> dict[str, Any]:
    """Restore in place; returns the raw state (epoch, history, mlflow_run_id)."""
    state = load_weights(directory, model)
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, s in schedulers.items():
        s.load_state_dict(state["schedulers"][k])
    set_rng_state(state["rng"])
    return state


def load_weights(directory: str | Path, model: nn.Module) -> dict[str, Any]:
    """Copy a checkpoint's trainable tensors into ``model`` after checking that it belongs to
    it (names, shapes, frozen fingerprint); returns the raw state."""
    path = Path(directory) / STATE_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(state["trainable"]) != expected:
        missing = sorted(expected - set(state["trainable"]))[:5]
        extra = sorted(set(state["trainable"]) - expected)[:5]
        raise CheckpointMismatch(
            f"{path}: trainable tensors differ from the model (missing {missing}, extra {extra}); "
            "was it written by a trial with other toggles?"
        )
    wrong = [f"{n} {tuple(t.shape)} vs {tuple(params[n].shape)}"
             for n, t in state["trainable"].items() if t.shape != params[n].shape]
    if wrong:
        raise CheckpointMismatch(
            f"{path}: tensor shapes differ from the model ({', '.join(wrong[:5])}); "
            "was it written by a trial with other module widths?"
        )
    fp = frozen_fingerprint(model)
    if not np.isclose(fp, state["frozen_fingerprint"], rtol=1e-6):
        raise CheckpointMismatch(
            f"{path}: frozen backbone weights differ from the ones the checkpoint was trained on"
        )
    with torch.no_grad():
        for name, tensor in state["trainable"].items():
            params[name].copy_(tensor)
    return state
