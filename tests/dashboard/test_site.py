"""The reproduction dashboard, built from a real MLflow store and the shipped space files, read
as HTML and in a real browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from vidablate.dashboard.collect import collect
from vidablate.dashboard.site import build_site
from vidablate.report.claims import judge_table
from vidablate.report.render import write_report
from vidablate.report.table import TrialOutcome, build_table
from vidablate.sweep.space import SHIPPED_SPACES, expand, load_space, shipped_spaces
from vidablate.sweep.tracking import (
    SweepTracker,
    log_seed_summaries,
    log_sweep_files,
    log_table_summary,
)

HM = {"baseline": 50.0, "sirm": 52.0, "sgam": 49.0, "sirm_sgam": 58.0}
"""Made-up final values per row (+ seed): the input of the dashboard, not a result."""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A store holding one finished 3-seed IS-CLIP Table II sweep, as the grid writes it."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    trials = expand(space, seeds=[0, 1, 2])
    tracker = SweepTracker(uri, space.name, {"mlflow.source.git.commit": "ab" * 20})
    parent, _ = tracker.parent_run("sweep-x", {"space": space.name})
    log_sweep_files(tracker, parent, space.path, trials)
    outcomes = []
    for t in trials:
        run = tracker.child_run("sweep-x", parent, t)
        final = HM[t.row] + t.seed
        now = int(time.time() * 1000)
        tracker.client.log_batch(run, metrics=[
            Metric(k, v, now, epoch) for epoch in (1, 2, 3)
            for k, v in (("hm", final - 3 + epoch), ("train_loss", 2.0 / epoch),
                         ("base_acc", 90.0), ("novel_acc", final - 10))])
        tracker.client.set_terminated(run, "FINISHED")
        outcomes.append(TrialOutcome(t.row, t.seed, {"hm": final, "base_acc": 90.0,
                                                     "novel_acc": final - 10}))
    table = build_table(space, outcomes)
    verdicts = judge_table(space.claims, table)
    files = write_report(space, table, root / "report", [("seeds", "3 (0, 1, 2)")], verdicts)
    for name, path in files.items():
        tracker.client.log_artifact(parent, str(path),
                                    artifact_path="claims" if name == "claims" else "table")
    log_table_summary(tracker.client, parent, table, verdicts, [("seeds", "3 (0, 1, 2)")])
    log_seed_summaries(tracker, "sweep-x", table, trials)
    tracker.client.set_tag(parent, "vidablate.trials_failed", "0")
    tracker.client.set_terminated(parent, "FINISHED")
    return uri


@pytest.fixture(scope="module")
def site(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site(store, out)
    return out


def test_status_lists_every_space_and_the_run_one(store, site):
    statuses = {s.name: s for s in collect(store)}
    assert set(statuses) == set(shipped_spaces())
    ran = statuses["isclip_modules"]
    assert ran.run is not None and ran.seeds == "3 (0, 1, 2)" and ran.failed == 0
    assert len(ran.claims) == len(ran.space.claims) and len(ran.trials) == 12
    assert any(s.startswith("code changed (abababab -> ") for s in ran.stale)  # other commit
    assert "space file changed since the run" not in ran.stale
    assert all(statuses[n].run is None for n in statuses if n != "isclip_modules")
    page = (site / "index.html").read_text()
    assert page.count("<tr data-space=") == len(statuses)
    assert f"1 of {len(statuses)} spaces run" in page


def test_table_page_has_claims_curves_trials_and_report(store, site):
    page = (site / "tables" / "isclip_modules.html").read_text()
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    assert page.count('<td class="verdict-') == len(space.claims)
    assert 'class="curves"' in page and "data:image/png;base64," in page
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("isclip_modules")
    children = client.search_runs([exp.experiment_id], "tags.`vidablate.kind` = 'trial'")
    for run in children:  # every trial links to its MLflow run
        assert f"#/experiments/{exp.experiment_id}/runs/{run.info.run_id}" in page
    assert "Fine-tuned CLIP" in page  # the report's table, inlined
    assert "http" not in page.replace("http://127.0.0.1:5000", "")  # nothing fetched online
    never = (site / "tables" / "xclip_components.html").read_text()
    assert "Not run in this tracking store" in never


def _chromium() -> str | None:
    return os.environ.get("VIDABLATE_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")


def test_pages_in_a_real_browser(site, tmp_path):
    executable = _chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium for the dashboard test (.ci/run installs it)")
        pytest.skip("no chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # only this test drives a browser

    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((site / "index.html").as_uri())
        row = page.locator('tr[data-space="isclip_modules"]')
        assert "3 (0, 1, 2)" in row.inner_text()
        assert page.locator("tr[data-space]").count() == len(shipped_spaces())
        assert "not run" in page.locator('tr[data-space="xclip_components"]').inner_text()
        page.screenshot(path=str(tmp_path / "status.png"))
        row.locator("a").first.click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text().startswith("IS-CLIP Table II")
        width = page.locator("img.curves").evaluate("img => img.naturalWidth")
        assert width > 300  # the curves decoded
        assert page.locator("table.claims tbody tr").count() == len(
            load_space(SHIPPED_SPACES / "isclip_modules.yaml").claims)
        assert page.locator("table.trials tbody tr").count() == 12
        page.screenshot(path=str(tmp_path / "table.png"), full_page=True)
        browser.close()
    assert not errors
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
    assert (tmp_path / "status.png").stat().st_size > 10_000
