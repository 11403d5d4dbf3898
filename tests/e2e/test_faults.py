"""Fault injection end to end, on the embedded default (synthetic video + IMU, tiny CLIP):

1. SIGKILL one Ray Train worker of a 2-worker DDP trial mid-epoch: Ray Train restarts the worker
   group from the last checkpoint (``trainer.max_failures``), the trial completes, and MLflow
   has one value per epoch. The same for a one-worker trial whose loop runs in the Tune
   trial's own process (``trainer.executor=auto``): that process is killed, and Tune
   relaunches the trial from its last checkpoint.
2. SIGKILL the driver (``jobs/ablate.py``) between the two trials of a table whose storage is
   an S3 bucket (moto's server), then run the same command again: the finished trial is kept (not retrained), the other one runs, MLflow has one
   parent run and one child run per (row, seed), and the table has both rows.
3. The bucket starts denying writes after a trial's first checkpoint: the trial fails with the
   store's reason (exit 1), the kept checkpoint stays readable, and the same command after the
   policy is fixed resumes the trial from it.

All print what they measured (``pytest -s`` shows it)."""

from __future__ import annotations

import os
import signal
import statistics
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.faults_helpers import (
    TRIAL_PROCESS,
    alive,
    checkpoint_dirs,
    checkpoint_root,
    descendants,
    describe,
    final_checkpoint,
    launch,
    run_to_end,
    sweep_id,
    train_workers,
    tune_results,
    wait_until,
)
from tests.services import ALLOW_S3, DENY_PUT

pytestmark = pytest.mark.e2e

BUDGET = 420  # seconds per CLI run; a run takes 1-3 min on 2 busy cores


def _runs(uri: str, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of an experiment; empty while the store is not there yet."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return [], []
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return ([r for r in runs if r.data.tags.get("vidablate.kind") == "sweep"],
            [r for r in runs if r.data.tags.get("vidablate.kind") == "trial"])


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key),
                                   key=lambda m: (m.step, m.timestamp))]


# --------------------------------------------------------------------------------------------
# 1. a Ray Train worker dies mid-epoch
# --------------------------------------------------------------------------------------------

WORKER_EPOCHS = 4
# 16 clips x 16 base classes = 256 clips, batch 8: 1.5-5 s per epoch on 2 cores (the kill must
# land inside one). max_trial_failures=0: only the worker-failure handling of the executor may
# recover (trainer.max_failures): Ray Train restarting its worker group, or, for a loop in the
# trial's own process, Tune relaunching the trial.
WORKER_ARGS = [
    "space=isclip_modules", "rows=[baseline]", "num_cpus=2",
    f"trainer.epochs={WORKER_EPOCHS}", "data.train_per_class=16", "data.test_per_class=1",
    "trainer.batch_size=8", "trainer.max_failures=2", "max_trial_failures=0", "seeds=[0]",
]
EXECUTORS = {
    # 2 DDP workers (gloo) x 1 CPU under Ray Train: one RayTrainWorker is killed
    "train": (["trainer.num_workers=2"], "RayTrainWorker", 2),
    # one worker in the Tune trial's own process (trainer.executor=auto): that process is killed
    "trial": (["trainer.num_workers=1"], TRIAL_PROCESS, 1),
}


def _run_worker_fault(ablate_cmd, tmp_path, kill: bool, executor: str = "train") -> dict:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra, title, count = EXECUTORS[executor]
    cli = launch(ablate_cmd + WORKER_ARGS + extra + [f"tracking_uri={uri}"], tmp_path, BUDGET)
    killed, killed_desc, t_kill, first_pids, new_pids = None, "", None, set(), set()
    try:
        if kill:
            # epoch 1 reported to the driver (its checkpoint registered with it): kill now, so
            # the kill lands in epoch 2, a few seconds long
            wait_until("the progress line of epoch 1",
                       lambda: any(e >= 1 for _, _, e in cli.progress()), BUDGET, cli, 0.05)
            workers = wait_until(f"{count} {title} process(es)",
                                 lambda: (w := train_workers(cli.pid, title)) and
                                 len(w) == count and w, 30, cli, 0.05)
            first_pids = {p.pid for p in workers}
            killed = workers[-1]
            killed_desc = describe(killed)
            t_kill = time.time()
            os.kill(killed.pid, signal.SIGKILL)  # exactly once
            # the worker group / the trial is restarted: new pids of that kind appear
            new_pids = wait_until(
                f"a restarted {title}",
                lambda: {p.pid for p in train_workers(cli.pid, title)} - first_pids, BUDGET,
                cli, 0.2)
        code = cli.wait(BUDGET)
        assert code == 0, f"exit code {code}{cli.tail()}"
        return {"cli": cli, "uri": uri, "killed": killed, "killed_desc": killed_desc,
                "t_kill": t_kill, "new_pids": new_pids, "wall": time.time() - cli.started}
    finally:
        cli.kill_session()
        cli.dump("faulted" if kill else "clean")


@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_sigkill_one_worker_mid_epoch_resumes_from_checkpoint(ablate_cmd, tmp_path, executor):
    run = _run_worker_fault(ablate_cmd, tmp_path, kill=True, executor=executor)
    cli, t_kill = run["cli"], run["t_kill"]
    assert not alive(run["killed"]), "the killed worker is still running"
    assert run["new_pids"], "no new worker process after the kill"

    parents, children = _runs(run["uri"], "isclip_modules")
    assert len(parents) == 1 and len(children) == 1, (
        f"{len(parents)} parent / {len(children)} child runs (want 1 / 1){cli.tail()}")
    assert parents[0].info.status == "FINISHED"
    child = children[0]
    assert child.info.status == "FINISHED"
    client = MlflowClient(run["uri"])
    want = list(range(1, WORKER_EPOCHS + 1))
    for key in ("train_loss", "hm", "base_acc", "novel_acc"):
        assert _steps(client, child.info.run_id, key) == want, (
            f"{key}: MLflow steps {_steps(client, child.info.run_id, key)} != {want}"
            f"{cli.tail()}")

    # Every result Tune received (its result.json, one line per ray.train.report of rank 0):
    # all epochs, in order, the last one the final epoch; an epoch reported twice would be an
    # epoch trained twice to its end. (Just-in-time checkpoints on a preemption warning report
    # too; there is none on a local cluster, and they are left out.)
    sid = sweep_id(cli.stdout)
    storage = tmp_path / "ray_results"
    reported = [int(r["epoch"]) for r in tune_results(storage, sid, "baseline-s0")
                if "jit_checkpoint_step" not in r]
    assert sorted(set(reported)) == want and reported[-1] == WORKER_EPOCHS, reported
    reported_twice = len(reported) - len(set(reported))

    # How many epochs were trained again: the final checkpoint's history keeps, for each epoch,
    # the wall-clock time rank 0 finished it. Entries finished before the kill were restored
    # from the checkpoint the restarted workers loaded; the others were trained after the
    # restart. Epochs the driver had seen finished before the kill (progress lines), but that
    # the restored history does not keep, were trained twice. The epoch the kill interrupted
    # was trained partly twice (not counted as a whole epoch).
    state = final_checkpoint(storage, sid, "baseline-s0")
    history = state["history"]
    assert state["epoch"] == WORKER_EPOCHS
    assert [int(h["epoch"]) for h in history] == want, history
    finished = [h["finished_at"] for h in history]
    assert finished == sorted(finished)
    kept = sum(t < t_kill for t in finished)
    seen = max(e for _, _, e in cli.progress(before=t_kill))
    repeated = max(seen - kept, 0)
    assert kept >= 1, "the restarted workers did not resume from a checkpoint (epoch 1 redone)"
    assert kept < WORKER_EPOCHS, "the kill landed after the last epoch: no fault was injected"
    assert repeated <= 1 and reported_twice <= 1, (
        f"{repeated} whole epoch(s) trained again, {reported_twice} reported twice "
        f"(driver saw {seen} before the kill, the checkpoint kept {kept}); reported {reported}")

    # Wall time the fault added, from the run itself: the gap between the last kept epoch and
    # the first epoch after the restart, less a normal epoch (median of the other gaps).
    gaps = [b - a for a, b in zip(finished, finished[1:], strict=False)]
    fault_gap = gaps[kept - 1]
    normal = statistics.median(gaps[:kept - 1] + gaps[kept:]) if len(gaps) > 1 else 0.0
    print(f"\n[worker fault, executor={executor}] killed {run['killed_desc']} at epoch {kept + 1} "
          f"(driver had seen {seen}); resumed from epoch {kept}; whole epochs trained again: "
          f"{repeated}; epochs reported twice: {reported_twice}; Tune reports {reported}; "
          f"fault gap {fault_gap:.1f} s vs normal epoch {normal:.1f} s -> about "
          f"{fault_gap - normal:.1f} s added; total wall {run['wall']:.0f} s")
    if os.environ.get("VIDABLATE_FAULT_COMPARE"):  # opt-in: the same run without the kill
        (tmp_path / "clean").mkdir()
        clean = _run_worker_fault(ablate_cmd, tmp_path / "clean", kill=False,
                                  executor=executor)
        print(f"[worker fault] without the kill: {clean['wall']:.0f} s; with: "
              f"{run['wall']:.0f} s; added {run['wall'] - clean['wall']:.0f} s")


# --------------------------------------------------------------------------------------------
# 2. the driver dies between two trials; the same command again
# --------------------------------------------------------------------------------------------

DRIVER_EPOCHS = 2
DRIVER_ARGS = [
    "space=isclip_modules", "rows=[baseline,sgam]", "num_cpus=2", "max_concurrent=1",
    f"trainer.epochs={DRIVER_EPOCHS}", "data.train_per_class=2", "data.test_per_class=1",
    "trainer.batch_size=8", "seeds=[0]",
]


def test_sigkill_driver_mid_table_then_rerun_keeps_finished_trial(ablate_cmd, tmp_path,
                                                                  s3_server, monkeypatch):
    """On object storage (an S3 bucket): the Tune state and checkpoints the re-run resumes
    from are read back from the bucket."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"s3://{s3_server.bucket('driver-fault')}/ablations"
    cmd = ablate_cmd + DRIVER_ARGS + [f"tracking_uri={uri}", f"storage_path={storage}"]
    first = launch(cmd, tmp_path, BUDGET)
    survivors = []
    try:
        def first_done():
            if not (tmp_path / "mlflow.db").exists():
                return None
            try:
                _, children = _runs(uri, "isclip_modules")
            except Exception:  # noqa: BLE001 - the store may be mid-creation
                return None
            rows = {r.data.tags.get("vidablate.row"): r for r in children}
            base = rows.get("baseline")
            return base if base is not None and base.info.status == "FINISHED" else None

        base = wait_until("the baseline trial's child run FINISHED", first_done, BUDGET,
                          first, 0.5)
        tree = descendants(first.pid)
        t_kill = time.time()
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
        _, children = _runs(uri, "isclip_modules")
        sgam = [r for r in children if r.data.tags.get("vidablate.row") == "sgam"]
        # a queued trial has no child run yet (runs are created when their trial starts)
        assert not sgam or sgam[0].info.status != "FINISHED", "sgam finished before the kill"
        sid = sweep_id(first.stdout)
        base_ckpts = checkpoint_dirs(storage, sid, "baseline-s0")
        assert base_ckpts, "no checkpoint of the finished baseline trial"

        # what is left of the Ray cluster the killed driver started (its session: the tree
        # seen just before the kill, and workers forked since then)
        time.sleep(5)
        survivors = first.session()
        print(f"\n[driver fault] killed the driver {first.pid} after baseline finished; "
              f"{len(tree)} processes in its tree, {len(survivors)} of its session alive 5 s "
              f"later: " + "; ".join(describe(p) for p in survivors))
    finally:
        first.kill_session()  # the survivors too: they would hold CPUs
        first.dump("first")
    time.sleep(1)
    assert not first.session(), "processes of the killed driver's session remain"

    client = MlflowClient(uri)
    base_history = {k: [(m.step, m.value, m.timestamp) for m in
                        client.get_metric_history(base.info.run_id, k)]
                    for k in ("train_loss", "hm")}
    again, code = run_to_end(cmd, tmp_path, BUDGET, "again")
    assert code == 0, f"re-run exit code {code}{again.tail()}"
    out = again.stdout
    assert "resum" in out, f"the re-run did not resume the sweep{again.tail()}"
    assert "| Fine-tuned CLIP" in out and "| + SGAM" in out, f"table rows missing{again.tail()}"
    assert not [k for _, k, _ in again.progress() if k == "baseline-s0"], (
        f"the finished baseline trial reported epochs again{again.tail()}")

    parents, children = _runs(uri, "isclip_modules")
    assert len(parents) == 1, f"{len(parents)} parent runs"
    assert parents[0].info.status == "FINISHED"
    rows = sorted(r.data.tags.get("vidablate.row") for r in children)
    assert rows == ["baseline", "sgam"], f"child runs per row: {rows}"
    want = list(range(1, DRIVER_EPOCHS + 1))
    for r in children:
        assert r.info.status == "FINISHED", (r.data.tags["vidablate.row"], r.info.status)
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for key in ("train_loss", "hm"):
            assert _steps(client, r.info.run_id, key) == want, (
                r.data.tags["vidablate.row"], key, _steps(client, r.info.run_id, key))

    # baseline was not trained again: same metric values and timestamps (all before the kill),
    # no new checkpoint
    base_after = client.get_run(base.info.run_id)
    for key, before in base_history.items():
        after = [(m.step, m.value, m.timestamp) for m in
                 client.get_metric_history(base.info.run_id, key)]
        assert after == before, f"{key}: {before} -> {after}"
        assert max(ts for _, _, ts in after) / 1000 < t_kill
    assert checkpoint_dirs(storage, sid, "baseline-s0") == base_ckpts
    same_end = base_after.info.end_time == base.info.end_time
    assert same_end, "a replayed finished trial must keep its run's end time"
    print(f"[driver fault] baseline end time {'unchanged' if same_end else 'changed'} "
          f"({base.info.end_time} -> {base_after.info.end_time}); first run "
          f"{t_kill - first.started:.0f} s until the kill, re-run "
          f"{time.time() - again.started:.0f} s")


# --------------------------------------------------------------------------------------------
# 3. the bucket starts denying writes mid-trial; the re-run after the fix resumes
# --------------------------------------------------------------------------------------------

BUCKET_EPOCHS = 4
BUCKET_ARGS = [
    "space=isclip_modules", "rows=[baseline]", "num_cpus=2", f"trainer.epochs={BUCKET_EPOCHS}",
    "data.train_per_class=4", "data.test_per_class=1", "trainer.batch_size=8", "seeds=[0]",
    "cache=off", "max_trial_failures=0", "trainer.max_failures=0",
]


def test_bucket_that_denies_writes_fails_the_trial_with_that_reason_and_rerun_resumes(
        ablate_cmd, tmp_path, s3_server, monkeypatch):
    """moto checks an IAM user's policy: allowed, then ``s3:PutObject`` denied once epoch 1 and
    its checkpoint are in, then allowed again for the re-run."""
    import pyarrow.fs

    bucket = s3_server.bucket(f"deny-{os.getpid()}")
    user, key, secret = s3_server.user([ALLOW_S3])
    for k, v in {**s3_server.env, "AWS_ACCESS_KEY_ID": key,
                 "AWS_SECRET_ACCESS_KEY": secret}.items():
        monkeypatch.setenv(k, v)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"s3://{bucket}/ablations"
    cmd = ablate_cmd + BUCKET_ARGS + [f"tracking_uri={uri}", f"storage_path={storage}"]
    with s3_server.checking():
        first = launch(cmd, tmp_path, BUDGET)
        try:
            sid = sweep_id(first.stdout)
            # epoch 1 reached the driver: its checkpoint is in the bucket and registered in
            # Ray Train's snapshot there (a checkpoint whose registration is refused is not
            # resumed from)
            wait_until("epoch 1 with its checkpoint", lambda: first.progress() and
                       checkpoint_dirs(storage, sid, "baseline-s0"), BUDGET, first, 0.1)
            s3_server.policy(user, [ALLOW_S3, DENY_PUT])
            t_deny = time.time()
            code = first.wait(BUDGET)
        finally:
            first.kill_session()
            first.dump("denied")
        assert code == 1, f"exit code {code} while the bucket denied writes{first.tail()}"
        reason = [line for line in first.stderr.splitlines()
                  if line.startswith("trial baseline seed 0: failed")]
        assert reason and "ACCESS_DENIED" in reason[0], f"no denial reason{first.tail()}"
        kept = sorted(checkpoint_dirs(storage, sid, "baseline-s0"))
        assert kept, "the checkpoint written before the denial is gone"
        fs, root = pyarrow.fs.FileSystem.from_uri(
            f"{checkpoint_root(storage, sid, 'baseline-s0')}/{kept[-1]}")
        files = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
        assert any(f.size for f in files), f"checkpoint {kept[-1]} has no readable file"
        child = [r for r in _runs(uri, "isclip_modules")[1]
                 if r.data.tags.get("vidablate.row") == "baseline"]
        assert len(child) == 1 and child[0].info.status == "FAILED", child
        assert "ACCESS_DENIED" in child[0].data.tags.get("vidablate.failure", ""), child[0]
        epochs_before = max((e for _, k, e in first.progress() if k == "baseline-s0"), default=0)

        s3_server.policy(user, [ALLOW_S3])
        again, code = run_to_end(cmd, tmp_path, BUDGET, "allowed")
    assert code == 0, f"re-run exit code {code}{again.tail()}"
    resumed = [e for _, k, e in again.progress() if k == "baseline-s0"]
    assert resumed and resumed[-1] == BUCKET_EPOCHS and resumed[0] > 1, (
        f"the re-run did not resume from a kept checkpoint: epochs {resumed}{again.tail()}")
    (child,) = [r for r in _runs(uri, "isclip_modules")[1]
                if r.data.tags.get("vidablate.row") == "baseline"]
    assert child.info.status == "FINISHED"
    assert _steps(MlflowClient(uri), child.info.run_id, "train_loss") == \
        list(range(1, BUCKET_EPOCHS + 1))
    print(f"\n[bucket denies writes] denied {t_deny - first.started:.0f} s into the run after "
          f"epoch {epochs_before}; kept checkpoints {kept}; reason: {reason[0][:200]}; re-run "
          f"resumed at epoch {resumed[0]} and finished in {time.time() - again.started:.0f} s")
