"""Early stopping of HPO trials: the space's ``scheduler`` parsed, checked and built into Ray
Tune's schedulers; the sweep id follows it."""

from __future__ import annotations

import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

from vidablate.errors import ConfigError
from vidablate.sweep.schedulers import Scheduler, parse_scheduler
from vidablate.sweep.space import SpaceError, expand, load_space, sweep_id

HPO = {
    "name": "h", "kind": "hpo", "metrics": {"hm": "HM"},
    "objective": {"metric": "hm", "mode": "max"}, "num_samples": 4,
    "search": {"trainer.lr_new": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
}


def _space(tmp_path, **extra):
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump({**HPO, **extra}, sort_keys=False))
    return load_space(path)


def test_no_scheduler_is_fifo_and_builds_nothing():
    assert parse_scheduler("f", None) == Scheduler()
    assert Scheduler().build("hm", "max", 10) is None
    assert Scheduler().describe(10) == "no early stopping"


def test_asha_is_built_with_the_space_settings_on_epochs():
    s = parse_scheduler("f", {"type": "asha", "grace_period": 2, "reduction_factor": 3})
    tune_s = s.build("hm", "max", 15)
    assert isinstance(tune_s, ASHAScheduler)
    assert (tune_s._time_attr, tune_s._metric, tune_s._mode) == ("epoch", "hm", "max")
    assert tune_s._max_t == 15 and tune_s._reduction_factor == 3
    # rungs at grace * eta^k below max_t (Li et al. 2020, Algorithm 1)
    assert sorted(milestone for milestone, _ in tune_s._brackets[0]._rungs) == [2, 6]
    assert s.describe(15) == ("asha early stopping (max 15 epochs, grace period 2, reduction "
                              "factor 3)")


def test_hyperband_and_a_type_name_alone():
    s = parse_scheduler("f", "hyperband")
    assert s.type == "hyperband" and s.reduction_factor == 3.0
    assert isinstance(s.build("loss", "min", 9), HyperBandScheduler)


@pytest.mark.parametrize("raw,match", [
    ({"type": "median"}, r"scheduler.type must be one of"),
    ({"type": "asha", "grace": 1}, r"scheduler has unknown field\(s\) \['grace'\]"),
    ({"type": "asha", "grace_period": 0}, r"scheduler.grace_period must be an integer >= 1"),
    ({"type": "asha", "reduction_factor": 1}, r"scheduler.reduction_factor must be a number > 1"),
    ({"type": "asha", "max_t": -1}, r"scheduler.max_t must be an integer >= 0"),
    (["asha"], r"scheduler must be a mapping"),
])
def test_bad_scheduler_fields_name_the_file_and_field(tmp_path, raw, match):
    with pytest.raises(SpaceError, match=rf"h.yaml: {match}"):
        _space(tmp_path, scheduler=raw)


def test_scheduler_that_cannot_fit_the_epochs_is_refused():
    with pytest.raises(ConfigError, match=r"f: scheduler.max_t=20 exceeds trainer.epochs=15"):
        Scheduler("asha", max_t=20).check("f", 15)
    with pytest.raises(ConfigError, match=r"grace_period=16 exceeds max_t=15"):
        Scheduler("asha", grace_period=16).check("f", 15)
    Scheduler("asha", grace_period=15).check("f", 15)


def test_a_table_space_has_no_scheduler(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "metrics": {"hm": "HM"},
                                    "rows": [{"name": "a", "toggles": {}}],
                                    "scheduler": {"type": "asha"}}))
    with pytest.raises(SpaceError, match=r"t.yaml: scheduler stops HPO trials early"):
        load_space(path)


def test_the_sweep_id_changes_with_early_stopping_only(tmp_path):
    plain = _space(tmp_path)
    fifo = _space(tmp_path, scheduler={"type": "fifo"})
    asha = _space(tmp_path, scheduler={"type": "asha"})
    asha4 = _space(tmp_path, scheduler={"type": "asha", "reduction_factor": 4})
    ids = [sweep_id(s, expand(s, None, None, [0])) for s in (plain, fifo, asha, asha4)]
    assert ids[0] == ids[1] and len(set(ids)) == 3
