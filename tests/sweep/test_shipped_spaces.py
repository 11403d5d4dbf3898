"""Every shipped search space passes the dry run: it loads, every row (or every HPO bound and
choice) validates against the typed config, and its cost can be described."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidablate.modules import registry
from vidablate.sweep.cost import describe
from vidablate.sweep.space import expand, load_space

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
PRESETS = sorted((REPO / "platform" / "vidablate" / "conf" / "data").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """$VIDABLATE_DATA with a one-row manifest and a class-name file for every path the
    dataset presets name, so spaces whose rows name real datasets pass the dry run (which
    checks that files exist; their content is checked by the pre-flight of a real run)."""
    import os

    import yaml

    from vidablate.data.manifest import write_class_names, write_manifest

    root = tmp_path_factory.mktemp("data")
    old = os.environ.get("VIDABLATE_DATA")
    os.environ["VIDABLATE_DATA"] = str(root)
    for preset in PRESETS:
        raw = yaml.safe_load(preset.read_text())
        n = raw.get("num_classes", 2)
        paths = [raw.get(k) for k in ("train_manifest", "test_manifest")]
        paths += raw.get("cross_manifests") or []
        for key in ("class_names_file", "cross_class_names_file"):
            if raw.get(key):
                name = raw[key].replace("${oc.env:VIDABLATE_DATA,data}", str(root))
                count = 51 if "hmdb51" in name else 101 if "ucf101" in name else n
                write_class_names([f"class {i}" for i in range(count)], name)
        for path in filter(None, paths):
            write_manifest([{"video": "a.mp4", "label": 0, "label_name": "class 0"}],
                           path.replace("${oc.env:VIDABLATE_DATA,data}", str(root)))
    yield root
    if old is None:
        os.environ.pop("VIDABLATE_DATA")
    else:
        os.environ["VIDABLATE_DATA"] = old


def test_there_is_a_space_per_paper():
    papers = {load_space(p).paper for p in SPACES}
    assert {p.name for p in registry.papers()} <= papers


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_space_passes_the_dry_run(path, data_root):
    space = load_space(path)
    assert space.name == path.stem, "space=NAME must find the file"
    trials = expand(space)
    text = describe(space, trials, cost=False)
    assert "training clip passes" in text
    if space.kind == "table":
        assert space.source and space.title
        with_numbers = [r for r in space.rows if r.paper]
        assert with_numbers or space.notes, "a table needs the paper's numbers or notes on them"
    else:
        assert space.objective["metric"] in space.metrics


def test_rows_can_name_their_dataset(data_root):
    space = load_space(REPO / "search_spaces" / "xclip_zeroshot_cross.yaml")
    trials = {t.row: t.experiment["data"] for t in expand(space)}
    hmdb, ucf = trials["k400_to_hmdb51"], trials["k400_to_ucf101"]
    assert hmdb["protocol"] == ucf["protocol"] == "cross_dataset"
    assert hmdb["train_manifest"] == str(data_root / "k400" / "train.parquet")
    assert [Path(p).name for p in ucf["cross_manifests"]] == [
        "test_split1.parquet", "test_split2.parquet", "test_split3.parquet"]
    assert "ucf101" in ucf["cross_class_names_file"] and "hmdb51" in hmdb["cross_manifests"][0]
