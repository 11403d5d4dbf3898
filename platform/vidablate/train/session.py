"""Where the training loop runs and how it talks to Ray: a Ray Train worker (``TrainSession``:
DDP ranks, Train's checkpoints and failure handling) or the Ray Tune trial's own process
(``TrialSession``: one worker, Tune's checkpoints, Tune relaunches a failed trial). The loop
(``loop.run_loop``) is the same for both; it only asks its session for its rank, device,
checkpoint, reports and preemption warnings.

A one-worker trial in its own process starts no Train controller, worker group or placement
group of its own (``trainer.executor``). Its fault tolerance matches Train's: a lost process or
node is relaunched by Tune from the last checkpoint in storage, and a node that Ray announces is
being drained (a spot reclaim) gets a just-in-time checkpoint, as Train's
``get_preemption_info`` gives its workers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol

import ray
import ray.train
import ray.train.torch
import torch
from torch import nn

from ..errors import ensure_space, no_space_error
from .checkpoint import CHECKPOINT_MARGIN, STATE_FILE

PROGRESS_FILE = "progress.json"
"""Beside a trial-process checkpoint's state file: the finished epochs and the steps of the
next one it holds, so a restarted trial finds the newest checkpoint in its storage folder."""


class Session(Protocol):
    """What the loop asks of the process it runs in."""

    executor: str
    rank: int
    world: int

    def device(self, use_gpu: bool) -> torch.device: ...

    def checkpoint(self) -> Any:
        """The checkpoint to resume from (a ``ray.train.Checkpoint``), or None."""

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step runs (DDP over several workers)."""

    def preempted(self) -> bool:
        """The node is about to be taken away: save a just-in-time checkpoint."""

    def report(self, metrics: dict[str, Any], directory: str | None = None) -> None:
        """One result, with the checkpoint folder this rank wrote, if any."""


def node_id() -> str:
    """The Ray node this process runs on; empty outside Ray (asking would start a local Ray)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _folder_bytes(directory: str) -> int:
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())


class TrainSession:
    """The loop as a Ray Train worker (``ray.train``): ranks, DDP, Train's checkpoints."""

    executor = "train"

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def device(self, use_gpu: bool) -> torch.device:
        return ray.train.torch.get_device() if use_gpu else torch.device("cpu")

    def checkpoint(self) -> Any:
        return ray.train.get_checkpoint()

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP over the worker group (several workers only)."""
        if self.world > 1:
            return ray.train.torch.prepare_model(model, move_to_device=False)
        return model

    def preempted(self) -> bool:
        """Ray Train says a node of the worker group is about to go (a barrier across ranks)."""
        return ray.train.get_preemption_info() is not None

    def report(self, metrics: dict[str, Any], directory: str | None = None) -> None:
        """Metrics, with the checkpoint folder rank 0 wrote (None on the other ranks)."""
        report_checkpoint(metrics, directory)


def _local_storage() -> Any:
    """Ray Train's storage context of this trial when it stores checkpoints in a local (or
    mounted shared) folder; None for a cloud URI or where Ray Train gives none."""
    try:
        storage = ray.train.get_context().get_storage()
        local = getattr(storage.storage_filesystem, "type_name", None) == "local"
        return storage if local and hasattr(storage, "make_default_checkpoint_dir_name") \
            else None
    except (AttributeError, NotImplementedError, RuntimeError):
        return None


def report_checkpoint(metrics: dict[str, Any], directory: str | None) -> None:
    """``ray.train.report`` with the checkpoint folder rank 0 wrote (None on the other ranks).
    When the trial's storage is a local folder, its free space is checked for the folder's
    size first, and an upload that still runs out of space removes the partial copy; both
    fail the trial with NoSpaceError."""
    if directory is None:
        ray.train.report(metrics, checkpoint=None)
        return
    checkpoint = ray.train.Checkpoint.from_directory(directory)
    storage = _local_storage()
    if storage is None:
        ray.train.report(metrics, checkpoint=checkpoint)
        return
    root = storage.experiment_fs_path
    need = _folder_bytes(directory) + CHECKPOINT_MARGIN
    ensure_space(root, need)
    name = storage.make_default_checkpoint_dir_name()  # rank 0's name is the one Ray uses
    try:
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
    except Exception as exc:
        err = no_space_error(exc, root, need)
        if err is None:
            raise
        shutil.rmtree(storage.build_checkpoint_path_from_name(name), ignore_errors=True)
        raise err from exc


class TrialSession:
    """The loop in the Tune trial's own process (``ray.tune``): one worker, no DDP; its
    checkpoints go to the trial's folder in the sweep's storage."""

    executor = "trial"
    rank, world = 0, 1

    def device(self, use_gpu: bool) -> torch.device:
        """The trial's GPU (Ray sets CUDA_VISIBLE_DEVICES to the one it holds) or the CPU."""
        if use_gpu:
            torch.cuda.set_device(0)
            return torch.device("cuda", 0)
        return torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    @staticmethod
    def _storage() -> Any:
        """Tune's storage context of this trial (its filesystem and folder)."""
        # the session of a Tune function trainable; ray.tune has no public accessor for it
        from ray.train._internal.session import get_session

        session = get_session()
        return getattr(session, "storage", None)

    def checkpoint(self) -> Any:
        """The newest complete checkpoint of this trial: Tune's own, or a newer one in the
        trial's storage folder that Tune's saved state does not know yet (its driver was
        killed between the upload and its next state snapshot), as Ray Train finds a run's
        latest checkpoint by name."""
        from ray import tune  # the Tune session exists only inside a trial process

        known = tune.get_checkpoint()
        storage = self._storage()
        if storage is None:
            return known
        try:
            found = newest_checkpoint(storage.storage_filesystem, storage.trial_fs_path)
        except OSError:
            return known
        if found is None:
            return known
        return tune.Checkpoint(found, filesystem=storage.storage_filesystem)

    def preempted(self) -> bool:
        """Ray is draining this process's node (a spot reclaim announced): the signal Ray
        Train's preemption watcher passes to its workers."""
        # Ray's drain state has no public accessor; Ray Train's preemption watcher reads it so
        import ray._private.state

        try:
            return node_id() in ray._private.state.state.get_draining_nodes()
        except Exception:  # noqa: BLE001 - no GCS answer: carry on without the warning
            return False

    def report(self, metrics: dict[str, Any], directory: str | None = None) -> None:
        """``ray.tune.report``; a checkpoint folder gets its progress file, a local storage
        its free-space check, and an upload that runs out of space leaves no partial copy."""
        from ray import tune

        if directory is None:
            tune.report(metrics)
            return
        progress = {"epoch": int(metrics.get("epoch", 0)),
                    "step": int(metrics.get("jit_checkpoint_step", 0))}
        (Path(directory) / PROGRESS_FILE).write_text(json.dumps(progress))
        checkpoint = tune.Checkpoint.from_directory(directory)
        storage = self._storage()
        local = storage is not None and getattr(
            storage.storage_filesystem, "type_name", None) == "local"
        if not local:
            tune.report(metrics, checkpoint=checkpoint)
            return
        root = storage.trial_fs_path
        need = _folder_bytes(directory) + CHECKPOINT_MARGIN
        ensure_space(root, need)
        try:
            tune.report(metrics, checkpoint=checkpoint)
        except Exception as exc:
            err = no_space_error(exc, root, need)
            if err is None:
                raise
            shutil.rmtree(storage.checkpoint_fs_path, ignore_errors=True)
            raise err from exc


ZIP_END = b"PK\x05\x06"
"""The signature of a zip file's end-of-central-directory record, its last 22 bytes when the
archive has no comment (``torch.save`` writes none): a state file cut short lacks it."""


def _whole_zip(fs: Any, path: str, size: int) -> bool:
    """``path`` ends with a zip end record (a copy that stopped midway does not)."""
    if size < 22:
        return False
    try:
        with fs.open_input_file(path) as f:
            f.seek(size - 22)
            return f.read(4) == ZIP_END
    except OSError:
        return False


def newest_checkpoint(fs: Any, folder: str) -> str | None:
    """The path of the newest complete checkpoint folder under ``folder`` on the pyarrow
    filesystem ``fs``: most finished epochs, then most steps of the next epoch; complete =
    it holds its progress file and a whole state file (a restored trial writes its next
    checkpoint over a folder of the same index, and may be stopped midway)."""
    import pyarrow.fs

    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    except FileNotFoundError:
        return None
    best: tuple[tuple[int, int], str] | None = None
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.Directory or \
                not entry.base_name.startswith("checkpoint_"):
            continue
        state, progress = fs.get_file_info([f"{entry.path}/{STATE_FILE}",
                                            f"{entry.path}/{PROGRESS_FILE}"])
        if state.type != pyarrow.fs.FileType.File or progress.type != pyarrow.fs.FileType.File \
                or not _whole_zip(fs, state.path, state.size or 0):
            continue
        try:
            with fs.open_input_stream(progress.path) as f:
                raw = json.loads(f.readall())
            key = (int(raw["epoch"]), int(raw.get("step", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if best is None or key > best[0]:
            best = (key, entry.path)
    return best[1] if best else None
