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


def test_there_is_a_space_per_paper():
    papers = {load_space(p).paper for p in SPACES}
    assert {p.name for p in registry.papers()} <= papers


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_space_passes_the_dry_run(path, placeholder_data):
    space = load_space(path)
    assert space.name == path.stem, "space=NAME must find the file"
    trials = expand(space)
    text = describe(space, trials, cost=False)
    assert "training clip passes" in text
    assert space.recipe, "every space names its paper's recipe (conf/recipe/) for real data"
    if space.kind == "table":
        assert space.source and space.title
        with_numbers = [r for r in space.rows if r.paper]
        assert with_numbers or space.notes, "a table needs the paper's numbers or notes on them"
    else:
        assert space.objective["metric"] in space.metrics


def test_rows_can_name_their_dataset(placeholder_data):
    space = load_space(REPO / "search_spaces" / "xclip_zeroshot_cross.yaml")
    trials = {t.row: t.experiment["data"] for t in expand(space)}
    hmdb, ucf = trials["k400_to_hmdb51"], trials["k400_to_ucf101"]
    assert hmdb["protocol"] == ucf["protocol"] == "cross_dataset"
    assert hmdb["train_manifest"] == str(placeholder_data / "k400" / "train.parquet")
    assert [Path(p).name for p in ucf["cross_manifests"]] == [
        "test_split1.parquet", "test_split2.parquet", "test_split3.parquet"]
    assert "ucf101" in ucf["cross_class_names_file"] and "hmdb51" in hmdb["cross_manifests"][0]
