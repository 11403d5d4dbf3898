"""The driver's data pre-flight on real mp4 manifests: an empty split, or a class in use with
no clip, is an error before any trial starts (the trial would log an untrained model or an
accuracy over nothing as a result); all problems come in one line."""

from __future__ import annotations

import pytest

from vidablate.config import ExperimentConfig
from vidablate.data.converters import export_synthetic
from vidablate.data.manifest import read_manifest, write_manifest
from vidablate.data.preflight import check_data, classes_in_use
from vidablate.data.synthetic import SyntheticSpec
from vidablate.errors import ConfigError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    spec = SyntheticSpec(num_classes=4, train_per_class=2, test_per_class=1, num_frames=8,
                         image_size=32)
    return export_synthetic(tmp_path_factory.mktemp("data"), spec)


def _cfg(files, protocol: str = "closed_set", **data) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "data": {"dataset": "synthetic_mp4", "protocol": protocol, "num_classes": 4,
                 "base_classes": 2, "train_manifest": str(files["train"]),
                 "test_manifest": str(files["test"]), "class_names_file":
                 str(files["classnames"]), "image_size": 32, "num_frames": 4,
                 "validate_decode": False, **data},
        "trainer": {"epochs": 1}}).validate()


def _copy(files, tmp_path, split: str, keep) -> str:
    rows = [r for r in read_manifest(files[split]).to_pylist() if keep(r)]
    path = files[split].parent / f"{split}-{tmp_path.name}.csv"
    write_manifest(rows, path)
    return str(path)


def test_complete_manifests_pass(files):
    lines = check_data([_cfg(files)])
    assert len(lines) == 2 and all("0 problem(s)" in line for line in lines)


def test_empty_split_is_an_error(files, tmp_path):
    empty = str(tmp_path / "empty.parquet")  # the columns and no rows
    write_manifest(read_manifest(files["test"]).slice(0, 0), empty)
    with pytest.raises(ConfigError) as err:
        check_data([_cfg(files, test_manifest=empty)])
    assert f"data.test_manifest={empty}: the manifest has no clips" in str(err.value)
    assert "\n" not in str(err.value)


def test_class_without_clips_is_named(files, tmp_path):
    no_class_3 = _copy(files, tmp_path, "train", lambda r: int(r["label"]) != 3)
    with pytest.raises(ConfigError, match=r"no clips of 1 of the 4 classes in use \(3 '"):
        check_data([_cfg(files, train_manifest=no_class_3)])
    # base-to-novel trains on the base classes only: a missing novel class is fine there
    assert check_data([_cfg(files, protocol="base_novel", train_manifest=no_class_3)])


def test_classes_in_use_follow_the_protocol(files):
    assert classes_in_use(_cfg(files, protocol="base_novel"), "data.train_manifest", 4) == [0, 1]
    assert classes_in_use(_cfg(files, protocol="base_novel"), "data.test_manifest", 4) == \
        [0, 1, 2, 3]
    assert classes_in_use(_cfg(files), "data.train_manifest", 4) == [0, 1, 2, 3]
