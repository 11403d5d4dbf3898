"""A new sweep of a space that has an earlier one says which, what differs and how to go on
with the earlier one."""

from __future__ import annotations

from vidablate.sweep.earlier import differences, earlier_sweep_note
from vidablate.sweep.provenance import run_tags
from vidablate.sweep.space import SHIPPED_SPACES, expand, load_space
from vidablate.sweep.tracking import SweepTracker, log_sweep_files, resolved_trials


def test_differences_name_trials_and_settings():
    old = {"a-s0": {"trainer": {"epochs": 15}}, "b-s0": {"trainer": {"epochs": 15}}}
    new = {"a-s0": {"trainer": {"epochs": 2}}, "c-s0": {"trainer": {"epochs": 2}}}
    assert differences(old, new) == ["trials only in the earlier sweep: b-s0",
                                     "trials only in this one: c-s0",
                                     "trainer.epochs: 15 -> 2 (1 trial)"]
    assert differences(old, old) == []


def test_note_for_a_changed_setting(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    tracker = SweepTracker(uri, "isclip_modules",
                           run_tags(["vidablate", "ablate", "space=isclip_modules"]))
    before = expand(space, seeds=[0])
    parent, _ = tracker.parent_run("isclip_modules-aaaa", {"space": space.name})
    log_sweep_files(tracker, parent, space.path, before)
    after = expand(space, overrides={"trainer": {"epochs": 2}}, seeds=[0])
    note = earlier_sweep_note(tracker.client, tracker.experiment_id, space.name,
                              "isclip_modules-bbbb", resolved_trials(after))
    assert note.startswith("note: a new sweep of isclip_modules (isclip_modules-bbbb); an "
                           f"earlier one exists: isclip_modules-aaaa (parent run {parent}")
    epochs = before[0].experiment["trainer"]["epochs"]
    assert f"trainer.epochs: {epochs} -> 2 (4 trials)" in note
    assert note.endswith("Its command, to continue it: vidablate ablate space=isclip_modules")
    # the sweep itself is not "earlier"
    assert earlier_sweep_note(tracker.client, tracker.experiment_id, space.name,
                              "isclip_modules-aaaa", resolved_trials(before)) is None
