"""HPO spaces: structure checks, pre-flight validation of every bound and choice, and the Tune
distributions built from them (the HPO report: ``tests/report/test_hpo.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray import tune

from vidablate.sweep.cost import describe
from vidablate.sweep.hpo import _distribution
from vidablate.sweep.space import SpaceError, expand, load_space, sweep_id
from vidablate.sweep.tracking import decode_hpo_config, encode_hpo_key


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


def test_hpo_space_loads_and_expands_to_one_template(tmp_path):
    space = load_space(_write(tmp_path, _hpo()))
    assert space.kind == "hpo" and space.num_samples == 4 and not space.rows
    trials = expand(space)
    assert len(trials) == 1 and trials[0].key == "hpo-s0"
    assert trials[0].experiment["model"]["sgam"] is True
    text = describe(space, trials)
    assert "Optuna TPE, 4 trials maximising" in text and "model.stft_hop" in text


@pytest.mark.parametrize("change,message", [
    ({"objective": {"metric": "top1", "mode": "max"}}, "objective needs metric"),
    ({"objective": {"metric": "hm", "mode": "up"}}, "objective needs metric"),
    ({"num_samples": 0}, "num_samples"),
    ({"sampler": "random"}, "sampler"),
    ({"search": {}}, "'search' is empty"),
    ({"search": {"trainer.lr_new": {"type": "normal", "low": 0, "high": 1}}}, "type one of"),
    ({"search": {"trainer.lr_new": {"type": "uniform", "low": 1, "high": 1}}}, "low < high"),
    ({"search": {"trainer.lr_new": {"type": "loguniform", "low": 0.0, "high": 1}}}, "low > 0"),
    ({"search": {"trainer.lr_new": {"type": "uniform", "low": 0, "high": 1, "step": 2}}},
     "unknown ['step']"),
    ({"search": {"model.stft_hop": {"type": "int", "low": 1.5, "high": 4}}}, "integers"),
    ({"search": {"model.x": {"type": "categorical", "values": []}}}, "non-empty list"),
    ({"rows": [{"name": "a"}]}, "has no 'rows'"),
])
def test_hpo_space_structure_errors_name_the_field(tmp_path, change, message):
    with pytest.raises(SpaceError, match=None) as err:
        load_space(_write(tmp_path, _hpo(**change)))
    assert message in str(err.value)
    assert "hpo.yaml" in str(err.value)


@pytest.mark.parametrize("search,field", [
    ({"model.no_such_knob": {"type": "int", "low": 1, "high": 3}}, "no_such_knob"),
    ({"model.sirm_heads": {"type": "categorical", "values": [8, 3]}}, "sirm_heads"),
    ({"trainer.batch_size": {"type": "int", "low": 0, "high": 4}}, "trainer.batch_size"),
])
def test_every_bound_and_choice_is_validated_before_launch(tmp_path, search, field):
    data = _hpo(search=search, fixed={"model.sirm": True})
    with pytest.raises(SpaceError) as err:
        expand(load_space(_write(tmp_path, data)))
    assert field in str(err.value)


def test_distributions_and_key_encoding():
    assert isinstance(_distribution({"type": "loguniform", "low": 1e-3, "high": 1e-1}),
                      tune.search.sample.Float)
    ints = _distribution({"type": "int", "low": 1, "high": 3})
    assert {ints.sample() for _ in range(200)} == {1, 2, 3}  # inclusive upper bound
    assert _distribution({"type": "categorical", "values": [1, 2]}).categories == [1, 2]
    key = encode_hpo_key("model.mmb_step")
    assert "." not in key and decode_hpo_config({key: 3}) == {"model.mmb_step": 3}


def test_sweep_id_changes_with_the_search(tmp_path):
    a = load_space(_write(tmp_path, _hpo()))
    b = load_space(_write(tmp_path, _hpo(num_samples=5)))
    assert sweep_id(a, expand(a)) != sweep_id(b, expand(b))
