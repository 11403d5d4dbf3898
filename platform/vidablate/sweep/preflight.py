"""Pre-flight checks of a sweep, before anything starts: every trial can be scheduled on the
cluster, the storage is writable, the tracking store answers, a GPU exists where a trial asks
for one, and the saved Tune state of a resumed sweep can be read."""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs
import torch
from ray import tune

from ..errors import ConfigError
from .caching import trial_resources
from .space import TrialSpec


class RayTarget(Protocol):
    """What ``check_local_gpu`` reads of the sweep settings (``runner.SweepSettings``)."""

    @property
    def ray_address(self) -> str | None:
        """None: $RAY_ADDRESS if set, else a new local cluster."""


def check_resources(trials: list[TrialSpec], resources: dict[str, float],
                    packed: dict[str, bool] | None = None) -> None:
    """Fail before launch when no trial could ever be scheduled on this cluster."""
    for t in trials:
        tr = t.experiment["trainer"]
        workers = max(tr["num_workers"], 1)
        need = trial_resources(tr, (packed or {}).get(t.key, False))
        if tr["use_gpu"] and resources.get("GPU", 0) < need["GPU"]:
            raise ConfigError(
                f"trial {t.key}: trainer.use_gpu=true with trainer.num_workers={workers} needs "
                f"{need['GPU']:g} GPU(s); the Ray cluster has {resources.get('GPU', 0):g}")
        if resources.get("CPU", 0) < need["CPU"]:
            raise ConfigError(
                f"trial {t.key}: trainer.num_workers={workers} x trainer.cpus_per_worker="
                f"{tr['cpus_per_worker']} needs {need['CPU']:g} CPUs; the Ray cluster has "
                f"{resources.get('CPU', 0):g}")


def check_storage(storage: str) -> None:
    """The sweep's storage must be writable (a local folder) or a filesystem pyarrow knows (a
    cloud URI); checked without creating anything."""
    if "://" in storage:
        try:
            pyarrow.fs.FileSystem.from_uri(storage)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds
            raise ConfigError(f"storage_path={storage!r}: {type(err).__name__}: {err}") from None
        return
    path = Path(storage)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"storage_path={storage!r} is not writable ({existing} is "
                          f"{'not a folder' if not existing.is_dir() else 'read-only'}); pass "
                          f"storage_path=<a writable folder, shared by all nodes, or a cloud URI>")


def check_tracking(uri: str) -> None:
    """A tracking server must answer its health check; a sqlite store's folder must exist."""
    if uri.startswith(("http://", "https://")):
        url, headers = _health_request(uri)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=10) as reply:
                reply.read(64)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise ConfigError(
                    f"tracking_uri={_redact(uri)}: the MLflow server refused the credentials "
                    f"(HTTP {err.code}); give them in the URI (http://user:password@host:port) "
                    f"or in $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD") from None
            raise ConfigError(f"tracking_uri={_redact(uri)}: the MLflow server's health check "
                              f"answered HTTP {err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(
                f"tracking_uri={_redact(uri)}: the MLflow server does not answer ({reason}); "
                f"start it (mlflow server --host 127.0.0.1 --port 5000) or pass "
                f"tracking_uri=sqlite:///$PWD/mlflow.db") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"tracking_uri={uri}: {folder} is not a writable folder")


def _health_request(uri: str) -> tuple[str, dict[str, str]]:
    """The server's ``/health`` URL without the URI's ``user:password@`` part, and the
    credentials as the header MLflow's client sends: basic auth from the URI or
    $MLFLOW_TRACKING_USERNAME / _PASSWORD, else a bearer $MLFLOW_TRACKING_TOKEN."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health",
                                   "", ""))
    user = urllib.parse.unquote(parts.username or "") or os.environ.get(
        "MLFLOW_TRACKING_USERNAME", "")
    password = urllib.parse.unquote(parts.password or "") or os.environ.get(
        "MLFLOW_TRACKING_PASSWORD", "")
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return url, {"Authorization": f"Basic {token}"}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return url, {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    return url, {}


def _redact(uri: str) -> str:
    """A URI without the password part of ``user:password@host`` (never print credentials)."""
    return re.sub(r"//([^/:@]+):[^/@]*@", r"//\1:***@", uri)


def check_local_gpu(trials: list[TrialSpec], settings: RayTarget) -> None:
    """A new local cluster has the GPUs this machine has: fail before starting Ray when a
    trial asks for one and there is none (a remote cluster is checked once connected)."""
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    gpu = [t.key for t in trials if t.experiment["trainer"]["use_gpu"]]
    if address == "local" and gpu:
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.use_gpu=true (trial {gpu[0]}) but this machine has no "
                              f"CUDA GPU; set trainer.use_gpu=false or ray_address=<a cluster "
                              f"with GPUs>")


def check_tune_state(exp_path: str) -> bool:
    """Whether an earlier run of this sweep saved a Tune state to restore; a state that cannot
    be read fails now with the way forward (Tune would log it and silently start over)."""
    try:
        if not tune.Tuner.can_restore(exp_path):
            return False
        _read_tune_state(exp_path)
    except Exception as err:  # noqa: BLE001 - a damaged state file fails in many ways
        raise tune_state_error(exp_path, err) from None
    return True


def tune_state_error(exp_path: str, err: Exception) -> ConfigError:
    """The advice when the saved Tune state of a sweep cannot be read or restored."""
    return ConfigError(
        f"the saved Tune state of this sweep in {exp_path} cannot be read "
        f"({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}). "
        f"The trials' checkpoints and MLflow runs are intact: re-run the same command with "
        f"resume=false to start the Tune experiment afresh. Finished trials then report "
        f"their final result from their last checkpoint without training again, unfinished "
        f"ones continue from theirs, and the MLflow runs are reused.")


def _read_tune_state(exp_path: str) -> dict[str, Any]:
    """Parse the newest ``experiment_state-*.json`` of a Tune experiment (local or URI)."""
    fs, root = pyarrow.fs.FileSystem.from_uri(exp_path) if "://" in exp_path else (
        pyarrow.fs.LocalFileSystem(), exp_path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root))
    states = sorted(i.path for i in infos
                    if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    if not states:
        raise ValueError(f"no experiment_state-*.json in {exp_path}")
    with fs.open_input_stream(states[-1]) as f:
        return json.loads(f.read().decode())
