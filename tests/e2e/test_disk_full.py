"""A full disk, on a size-limited tmpfs: checkpoints that do not fit fail the trial with
"no space left on <path>: need N MiB, M free" as its reason (child and parent runs FAILED with
it, no partial files); after freeing space the same command resumes and finishes with one
value per epoch. A feature cache that does not fit stops the driver with the same message
before any trial. Prints what it measured (``pytest -s``)."""

from __future__ import annotations

import re
import subprocess

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

BUDGET = 420
EPOCHS = 2
ARGS = ["space=isclip_modules", "rows=[baseline]", "seeds=[0]", "num_cpus=2",
        f"trainer.epochs={EPOCHS}", "data.train_per_class=2", "data.test_per_class=1",
        "trainer.batch_size=8", "max_trial_failures=0", "trainer.max_failures=0"]
NO_SPACE = re.compile(r"no space left on (\S+): need (\d+) MiB, (\d+) free")


def _run(cmd, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=BUDGET)


def _partial(folder) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".part")
            or p.name.endswith(".partial")]


def test_checkpoints_on_a_full_disk_fail_with_the_reason_then_resume(ablate_cmd, tmp_path,
                                                                     small_disk):
    disk = small_disk("24m")
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * (23 * 2**20))  # ~1 MiB left: a checkpoint does not fit
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = ablate_cmd + ARGS + [f"tracking_uri={uri}", f"storage_path={disk / 'runs'}",
                               "cache=off"]
    first = _run(cmd, tmp_path)
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-3000:]
    line = next(x for x in first.stderr.splitlines() if x.startswith("trial baseline seed 0"))
    assert NO_SPACE.search(line), line
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("isclip_modules").experiment_id])
    by_kind = {r.data.tags["vidablate.kind"]: r for r in runs}
    for kind in ("sweep", "trial"):
        assert by_kind[kind].info.status == "FAILED", (kind, by_kind[kind].info.status)
        assert NO_SPACE.search(by_kind[kind].data.tags.get("vidablate.failure", "")), kind
    assert _partial(disk) == []
    print(f"\n[disk full] {line}")

    ballast.unlink()  # free space, the same command again
    again = _run(cmd, tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout
    runs = client.search_runs([client.get_experiment_by_name("isclip_modules").experiment_id])
    assert sorted(r.data.tags["vidablate.kind"] for r in runs) == ["sweep", "trial"]
    (child,) = [r for r in runs if r.data.tags["vidablate.kind"] == "trial"]
    assert child.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "train_loss"))
    assert steps == list(range(1, EPOCHS + 1)), steps


def test_a_feature_cache_that_does_not_fit_stops_before_any_trial(ablate_cmd, tmp_path,
                                                                  small_disk):
    disk = small_disk("1m")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = _run(ablate_cmd + ARGS + [f"tracking_uri={uri}", f"cache_path={disk / 'cache'}"],
               tmp_path)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("error:")]
    assert NO_SPACE.search(line) and "nothing was trained" in line, line
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert _partial(disk) == []
    print(f"\n[cache full] {line}")
