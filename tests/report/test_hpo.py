"""The HPO report: one line per trial with its sampled values and metrics."""

from __future__ import annotations

from pathlib import Path

import yaml

from vidablate.report.hpo import hpo_table
from vidablate.sweep.space import load_space


def _hpo(**extra) -> dict:
    data = {
        "name": "h", "kind": "hpo", "metrics": {"hm": "HM", "base_acc": "Base"},
        "objective": {"metric": "hm", "mode": "max"}, "num_samples": 4,
        "fixed": {"model.sgam": True},
        "search": {"trainer.lr_new": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                   "model.sgam_hidden": {"type": "categorical", "values": [0, 32]},
                   "model.stft_hop": {"type": "int", "low": 4, "high": 8}},
    }
    data.update(extra)
    return data


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "hpo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_hpo_table_lists_each_trial_with_values_metrics_and_epochs(tmp_path):
    space = load_space(_write(tmp_path, _hpo()))
    rows = [("hpo-a", {"trainer.lr_new": 0.01, "model.sgam_hidden": 32, "model.stft_hop": 5},
             {"hm": 40.0, "base_acc": 50.0, "epoch": 9}, "ok"),
            ("hpo-b", {"trainer.lr_new": 0.001}, {}, "failed"),
            ("hpo-c", {"trainer.lr_new": 0.1}, {"hm": 10.0, "epoch": 3}, "stopped")]
    md, csv = hpo_table(space, rows, "asha early stopping")
    assert "Optuna TPE, asha early stopping, objective hm (max)" in md
    assert "| hpo-a | 0.01 | 32 | 5 | 40.0 | 50.0 | 9 | ok |" in md
    assert "| hpo-c | 0.1 |  |  | 10.0 |  | 3 | stopped |" in md
    assert md.endswith("3 trials, 12 trial-epochs trained")
    assert csv.splitlines()[0] == "trial,trainer.lr_new,model.sgam_hidden,model.stft_hop,hm," \
                                  "base_acc,epochs,status"
    assert csv.splitlines()[2] == "hpo-b,0.001,,,,,0,failed"
