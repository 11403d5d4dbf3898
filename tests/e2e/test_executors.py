"""The two places a trial's loop can run (``trainer.executor``) give the same results: the same
two trials, one at a time, under Ray Train and in their Tune trial's own process (the second
trial in the process the first one left, Tune's ``reuse_actors``), log identical metrics at
every epoch. Only where they ran and how long it took differ."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

EPOCHS = 2
ARGS = ["space=isclip_modules", "rows=[baseline,sirm_sgam]", "seeds=[0]", "num_cpus=2",
        "max_concurrent=1", f"trainer.epochs={EPOCHS}", "data.train_per_class=4",
        "data.test_per_class=1", "trainer.batch_size=8"]
RESULTS = ("train_loss", "train_ce", "train_kd", "base_acc", "novel_acc", "hm")


def _history(uri: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("isclip_modules")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("vidablate.kind") == "trial"]
    return {r.data.tags["vidablate.trial_key"]: {
        k: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, k))
        for k in RESULTS} for r in runs}


def test_a_trial_gives_the_same_results_in_its_own_process_as_under_ray_train(ablate_cmd,
                                                                              tmp_path):
    found = {}
    for executor in ("train", "trial"):
        folder = tmp_path / executor
        folder.mkdir()
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        done = subprocess.run([*ablate_cmd, *ARGS, f"trainer.executor={executor}",
                               f"tracking_uri={uri}"], cwd=folder, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        found[executor] = _history(uri)
        layout = sorted(p.name for p in (folder / "ray_results").iterdir())
        trained_by_train = any(name.endswith("-train") for name in layout)
        assert trained_by_train == (executor == "train"), layout
    assert set(found["train"]) == set(found["trial"]) == {"baseline-s0", "sirm_sgam-s0"}
    for key, metrics in found["train"].items():
        for name, values in metrics.items():
            assert [s for s, _ in values] == list(range(1, EPOCHS + 1)), (key, name, values)
            assert values == found["trial"][key][name], (key, name)
