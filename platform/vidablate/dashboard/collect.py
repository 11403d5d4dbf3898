"""What the dashboard shows, read from MLflow and the space files: per space its last sweep
(date, commit, seeds, failed trials, claims, effects), whether it is stale, and per table the
child runs' per-epoch histories."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.tracking import MlflowClient

from ..sweep.provenance import source_tags
from ..sweep.space import SHIPPED_SPACES, Space, SpaceError, load_space
from ..sweep.tracking import SPACE_HASH_TAG, SWEEP_TAG, TRIAL_TAG, space_hash

CURVE_METRICS = ("train_loss",)
"""Per-epoch curves drawn for every table besides its own metrics."""


@dataclass
class Trial:
    """One child run: its row, seed, status and per-epoch metric histories."""

    run_id: str
    key: str
    row: str
    seed: int
    status: str
    start: int
    end: int | None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class SpaceStatus:
    """A space and its last sweep (``run`` None: never run in this tracking store)."""

    name: str
    path: Path
    space: Space | None
    error: str = ""
    """Why the space file does not load (shown, not raised)."""
    run: Run | None = None
    experiment_id: str = ""
    stale: list[str] = field(default_factory=list)
    """Why the last sweep may not describe the current code and file."""
    claims: list[dict[str, Any]] = field(default_factory=list)
    """The parent run's ``claims/claims.json`` entries (verdict, detail, claim)."""
    table_html: str = ""
    """The parent run's ``table/table.html`` (the report as that sweep wrote it)."""
    trials: list[Trial] = field(default_factory=list)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.run.data.tags) if self.run else {}

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.run.data.metrics) if self.run else {}

    @property
    def started(self) -> str:
        if not self.run:
            return ""
        when = datetime.fromtimestamp(self.run.info.start_time / 1000, tz=UTC)
        return when.strftime("%Y-%m-%d %H:%M UTC")

    @property
    def commit(self) -> str:
        return (self.tags.get("mlflow.source.git.commit", "")[:12]
                or self.tags.get("vidablate.ran_on.commit", ""))

    @property
    def seeds(self) -> str:
        return self.tags.get("vidablate.ran_on.seeds", "")

    @property
    def failed(self) -> int:
        return int(self.tags.get("vidablate.trials_failed", "0") or 0)

    def count(self, kind: str) -> int:
        """Claims of a verdict kind (reproduced / contradicted / inconclusive)."""
        return int(self.tags.get(f"vidablate.claims.{kind}", "0") or 0)

    def effects(self, kind: str) -> int | None:
        """Effects whose direction agrees / disagrees / is flat (None: no reference row)."""
        value = self.metrics.get(f"effects_{kind}")
        return None if value is None else int(value)


def space_files(extra: Path | None = None) -> list[Path]:
    """The shipped spaces, and after them ``extra``: a user's space file or folder of them."""
    files = sorted(SHIPPED_SPACES.glob("*.yaml"))
    if extra is not None:
        extra = Path(extra)
        files += [extra] if extra.is_file() else sorted(extra.glob("*.yaml"))
    return files


def _parents(client: MlflowClient) -> dict[str, tuple[Run, str]]:
    """Space name -> (latest parent run, experiment id) over every experiment."""
    experiments = client.search_experiments()
    latest: dict[str, tuple[Run, str]] = {}
    ids = [e.experiment_id for e in experiments]
    for i in range(0, len(ids), 50):
        token = None
        while True:
            page = client.search_runs(ids[i:i + 50], "tags.`vidablate.kind` = 'sweep'",
                                      order_by=["attributes.start_time DESC"],
                                      max_results=500, page_token=token)
            for run in page:
                name = run.data.params.get("space", "")
                if name and (name not in latest or
                             run.info.start_time > latest[name][0].info.start_time):
                    latest[name] = (run, run.info.experiment_id)
            token = page.token
            if not token:
                break
    return latest


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)  # a bar per small file buries the output
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:  # noqa: BLE001 - a missing artifact raises store-specific errors
            return ""
        return Path(local).read_text(encoding="utf-8")


def _trials(client: MlflowClient, status: SpaceStatus, metrics: list[str]) -> list[Trial]:
    run = status.run
    assert run is not None
    sweep = run.data.tags.get(SWEEP_TAG, "")
    children = client.search_runs([status.experiment_id],
                                  f"tags.`{SWEEP_TAG}` = '{sweep}' and "
                                  f"tags.`vidablate.kind` = 'trial'", max_results=5000)
    out = []
    for child in children:
        tags = child.data.tags
        key = tags.get(TRIAL_TAG, "")
        seed = tags.get("vidablate.seed") or key.rsplit("-s", 1)[-1]
        trial = Trial(child.info.run_id, key, tags.get("vidablate.row", ""),
                      int(seed) if seed.isdigit() else 0, child.info.status,
                      child.info.start_time, child.info.end_time)
        for key in metrics:
            if key in child.data.metrics:
                trial.history[key] = sorted((m.step, m.value)
                                            for m in client.get_metric_history(child.info.run_id,
                                                                               key))
        out.append(trial)
    return sorted(out, key=lambda t: (t.row, t.seed))


def collect(tracking_uri: str, spaces_dir: Path | None = None,
            details: list[str] | None = None) -> list[SpaceStatus]:
    """Every space (shipped, then ``spaces_dir``'s) with its last sweep in the store at
    ``tracking_uri``; the claims, report and trial histories of the spaces in ``details``
    (None: all)."""
    client = MlflowClient(tracking_uri)
    parents = _parents(client)
    head = source_tags().get("mlflow.source.git.commit", "")
    out = []
    for path in space_files(spaces_dir):
        try:
            space: Space | None = load_space(path)
            error = ""
        except SpaceError as err:
            space, error = None, str(err)
        name = space.name if space else path.stem
        status = SpaceStatus(name, path, space, error)
        if name in parents:
            status.run, status.experiment_id = parents[name]
            tags = status.run.data.tags
            if tags.get(SPACE_HASH_TAG) and tags[SPACE_HASH_TAG] != space_hash(path):
                status.stale.append("space file changed since the run")
            ran = tags.get("mlflow.source.git.commit", "") or \
                tags.get("vidablate.ran_on.commit", "").split(" ")[0]  # older runs: short sha
            if head and re.fullmatch(r"[0-9a-f]{7,40}", ran) and not head.startswith(ran):
                status.stale.append(f"code changed ({ran[:8]} -> {head[:8]})")
            if tags.get("vidablate.git.dirty") == "true":
                status.stale.append("ran with local changes")
            run_id = status.run.info.run_id
            if details is not None and name not in details:
                out.append(status)
                continue
            claims = _artifact_text(client, run_id, "claims/claims.json")
            status.claims = json.loads(claims)["claims"] if claims else []
            status.table_html = _artifact_text(client, run_id, "table/table.html")
            if space is not None and space.kind == "table":
                status.trials = _trials(client, status, [*space.metrics, *CURVE_METRICS])
        out.append(status)
    return out
