"""Resumable trial state: trainable tensors, optimizers, schedulers, epoch, RNG, MLflow run id.

Only trainable tensors are stored: the frozen backbone is rebuilt identically from the same
weights (or seed), and a fingerprint of the frozen tensors guards against a mismatch.

The state file is written under a temporary name and renamed. Its size (the bytes of every
tensor it holds, plus CHECKPOINT_MARGIN) is checked against the folder's free space first, and
a write that still runs out of space removes the partial file; both raise NoSpaceError.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ensure_space, no_space_error

STATE_FILE = "state.pt"
CHECKPOINT_MARGIN = 2**20
"""Bytes added to the tensor bytes for the free-space check: the pickled history, config and RNG
tuples, and the file's zip records."""


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


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensor storages in a nested dict/list/tuple, each storage counted once (as
    ``torch.save`` writes it)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, torch.Tensor):
            try:
                storage = v.untyped_storage()
                key, size = (str(v.device), storage.data_ptr()), storage.nbytes()
            except (RuntimeError, NotImplementedError):  # no plain storage (sparse, ...)
                key, size = ("tensor", id(v)), v.numel() * v.element_size()
            if key not in seen:
                seen.add(key)
                total += size
        elif isinstance(v, dict):
            todo += v.values()
        elif isinstance(v, (list, tuple)):
            todo += v
    return total


def checkpoint_bytes(state: dict[str, Any]) -> int:
    """The free space writing ``state`` needs: its tensors plus CHECKPOINT_MARGIN."""
    return tensor_bytes(state) + CHECKPOINT_MARGIN


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
    ``experiment`` the trial's resolved config, so ``vidablate predict`` rebuilds the model).
    Raises NoSpaceError (and leaves no partial file) when ``directory`` lacks the room."""
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    path = Path(directory) / STATE_FILE
    state = {
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
    }
    need = checkpoint_bytes(state)
    ensure_space(directory, need)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    try:
        with open(tmp, "wb") as f:  # a Python file: torch's write error keeps the OSError
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException as exc:
        written = tmp.stat().st_size if tmp.exists() else 0
        err = no_space_error(exc, directory, max(need, written))
        tmp.unlink(missing_ok=True)
        if err is not None and err is not exc:
            raise err from exc
        raise
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
