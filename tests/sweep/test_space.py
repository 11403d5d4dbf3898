"""Search-space files: structure, validation before launch, expansion and sweep identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vidablate.sweep.space import (
    SHIPPED_SPACES,
    SpaceError,
    expand,
    find_space,
    load_space,
    select_rows,
    sweep_id,
)

SHIPPED = sorted(p.stem for p in SHIPPED_SPACES.glob("*.yaml"))


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _space(**extra) -> dict:
    data = {
        "name": "t",
        "metrics": {"base_acc": "Base"},
        "rows": [{"name": "a", "toggles": {"model.sirm": False}, "paper": {"base_acc": 1.0}},
                 {"name": "b", "toggles": {"model.sirm": True}, "paper": {"base_acc": 2.0}}],
    }
    data.update(extra)
    return data


def test_isclip_tables_transcribe_the_paper():
    modules = {r.name: r for r in load_space("isclip_modules").rows}
    assert modules["baseline"].paper == {"base_acc": 97.6, "novel_acc": 60.5, "hm": 74.7}
    assert modules["sirm_sgam"].toggles == {"model.sirm": True, "model.sgam": True}
    assert modules["sirm_sgam"].paper["novel_acc"] == 66.3
    sensors = {r.name: r for r in load_space("isclip_sensors").rows}
    assert sensors["gyro"].paper == {"base_acc": 98.3, "novel_acc": 65.3, "hm": 78.5}
    assert sensors["acc"].toggles["model.imu_gyro"] is False


def test_unknown_toggle_fails_naming_file_row_and_key(tmp_path):
    data = _space()
    data["rows"][1]["toggles"]["model.sirn"] = True
    path = _write(tmp_path, data)
    with pytest.raises(SpaceError) as err:
        expand(load_space(path))
    msg = str(err.value)
    assert str(path) in msg and "'b'" in msg and "sirn" in msg


def test_impossible_combination_fails_before_launch(tmp_path):
    data = _space()
    data["rows"][1]["toggles"].update({"model.imu_acc": False, "model.imu_gyro": False})
    with pytest.raises(SpaceError, match="sirm.*imu_acc.*imu_gyro"):
        expand(load_space(_write(tmp_path, data)))


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("metrics"), "missing required key 'metrics'"),
    (lambda d: d.update(colour="red"), "unknown key"),
    (lambda d: d["rows"][0]["paper"].update(top5=3.0), "unknown metric"),
    (lambda d: d["rows"][1].update(name="a"), "unique"),
    (lambda d: d.update(seeds=[]), "seeds"),
    (lambda d: d.update(rows=[]), "empty"),
])
def test_malformed_files_name_the_problem(tmp_path, mutate, match):
    data = _space()
    mutate(data)
    with pytest.raises(SpaceError, match=match):
        load_space(_write(tmp_path, data))


def test_unknown_space_lists_known_ones():
    with pytest.raises(SpaceError, match="isclip_modules"):
        find_space("no_such_table")


def test_precedence_base_fixed_override_row_seed(tmp_path):
    path = _write(tmp_path, _space(fixed={"trainer.epochs": 3, "trainer.lr_new": 0.5},
                                   seeds=[4, 5]))
    base = {"trainer": {"epochs": 9, "lr_new": 0.1, "lr_visual": 0.2}}
    trials = expand(load_space(path), base, overrides={"trainer": {"lr_new": 0.7}})
    t = trials[0].experiment["trainer"]
    assert t["lr_visual"] == 0.2  # from base
    assert t["epochs"] == 3  # fixed beats base
    assert t["lr_new"] == 0.7  # explicit override beats fixed
    assert [x.key for x in trials] == ["a-s4", "a-s5", "b-s4", "b-s5"]
    assert [x.experiment["trainer"]["seed"] for x in trials] == [4, 5, 4, 5]
    assert trials[2].experiment["model"]["sirm"] is True


def test_sweep_id_is_deterministic_and_config_sensitive():
    space = load_space("isclip_modules")
    a, b = sweep_id(space, expand(space)), sweep_id(space, expand(space))
    assert a == b and a.startswith("isclip_modules-")
    c = sweep_id(space, expand(space, overrides={"trainer": {"epochs": 2}}))
    assert c != a


def test_select_rows_keeps_order_and_rejects_unknown():
    space = load_space("isclip_modules")
    sub = select_rows(space, ["sirm_sgam", "baseline"])
    assert [r.name for r in sub.rows] == ["baseline", "sirm_sgam"]
    with pytest.raises(SpaceError, match="nope"):
        select_rows(space, ["nope"])


def test_unschedulable_trials_fail_before_launch():
    from vidablate.config import ConfigError
    from vidablate.sweep.preflight import check_resources

    space = load_space("isclip_modules")
    gpu = expand(space, overrides={"trainer": {"use_gpu": True, "num_workers": 2}})
    with pytest.raises(ConfigError, match="use_gpu.*needs 2 GPU"):
        check_resources(gpu, {"CPU": 16.0})
    check_resources(gpu, {"CPU": 16.0, "GPU": 2.0})
    wide = expand(space, overrides={"trainer": {"num_workers": 4, "batch_size": 32}})
    with pytest.raises(ConfigError, match="needs 4 CPUs; the Ray cluster has 2"):
        check_resources(wide, {"CPU": 2.0})
