"""Every shipped search space passes the dry run: it loads, every row (or every HPO bound and
choice) validates against the typed config, and its cost can be described."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from vidablate.errors import ConfigError
from vidablate.modules import registry
from vidablate.report.claims import judge
from vidablate.sweep.cost import describe
from vidablate.sweep.space import SHIPPED_SPACES, expand, load_space

SPACES = sorted(SHIPPED_SPACES.glob("*.yaml"))


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
    assert space.recipe or space.dataset == "synthetic", \
        "every space names its paper's recipe (conf/recipe/) for real data"
    if space.kind == "table":
        assert space.source and space.title
        with_numbers = [r for r in space.rows if r.paper]
        assert with_numbers or space.notes, "a table needs the paper's numbers or notes on them"
    else:
        assert space.objective["metric"] in space.metrics


def test_rows_can_name_their_dataset(placeholder_data):
    space = load_space(SHIPPED_SPACES / "xclip_zeroshot_cross.yaml")
    trials = {t.row: t.experiment["data"] for t in expand(space)}
    hmdb, ucf = trials["k400_to_hmdb51"], trials["k400_to_ucf101"]
    assert hmdb["protocol"] == ucf["protocol"] == "cross_dataset"
    assert hmdb["train_manifest"] == str(placeholder_data / "k400" / "train.parquet")
    assert [Path(p).name for p in ucf["cross_manifests"]] == [
        "test_split1.parquet", "test_split2.parquet", "test_split3.parquet"]
    assert "ucf101" in ucf["cross_class_names_file"] and "hmdb51" in hmdb["cross_manifests"][0]


TABLES = [p for p in SPACES if load_space(p).kind == "table"]


@pytest.mark.parametrize("path", TABLES, ids=[p.stem for p in TABLES])
def test_every_table_names_its_reference_row_and_its_claims(path):
    space = load_space(path)
    assert space.reference, f"{path.name}: no reference row (the paper's baseline)"
    assert space.claims or space.claims_note, \
        f"{path.name}: no claims, and no claims_note saying why the table has none"
    for claim in space.claims:
        assert claim.text and claim.source, f"{path.name}: {claim.text!r} needs its source"


@pytest.mark.parametrize("path", TABLES, ids=[p.stem for p in TABLES])
def test_the_papers_own_numbers_satisfy_its_claims(path):
    """A transcription check: a claim the paper's table itself contradicts is mis-typed."""
    space = load_space(path)
    for claim in space.claims:
        paper = {r.name: r.paper.get(claim.metric) for r in space.rows}
        verdict = judge(claim, {}, paper)
        assert verdict.paper_holds is not False, (path.name, claim.text, paper)


def _embedded(path: Path) -> bool:
    """Every trial of the space runs on the embedded synthetic default (its data is here)."""
    try:
        trials = expand(load_space(path))
    except ConfigError:  # a row names a real dataset whose files are not here
        return False
    return all(t.experiment["data"]["dataset"] == "synthetic" for t in trials)


def _one_per_paper(paths: list[Path]) -> list[Path]:
    """The first table and the HPO space of each paper (alphabetical)."""
    chosen: dict[tuple[str, str], Path] = {}
    for path in paths:
        space = load_space(path)
        chosen.setdefault((space.paper, space.kind), path)
    return sorted(chosen.values())


@pytest.mark.slow
def test_the_dry_run_command_runs_for_every_space_whose_data_is_here(ablate_cmd, tmp_path):
    """What users run: ``jobs/ablate.py space=<space> dry_run=true`` in one Hydra multirun;
    each prints its plan, a table its wall estimate, with no traceback. CI runs one table and
    the HPO space of each paper (about 2 min); ``VIDABLATE_DRY_RUN_ALL=1`` runs every space
    whose data is here (about 8 min on 2 cores)."""
    embedded = [p for p in SPACES if _embedded(p)]
    names = [p.stem for p in (embedded if os.environ.get("VIDABLATE_DRY_RUN_ALL")
                              else _one_per_paper(embedded))]
    out = subprocess.run([*ablate_cmd, "-m", f"space={','.join(names)}", "dry_run=true"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    for name in names:
        assert f"space {name}:" in out.stdout, name
    tables = [n for n in names if load_space(SHIPPED_SPACES / f"{n}.yaml").kind == "table"]
    estimates = re.findall(r"^estimate: \d+ s wall on this machine \(cpu\)$", out.stdout, re.M)
    assert len(estimates) == len(tables) and len(names) >= 9, (len(estimates), len(names))
