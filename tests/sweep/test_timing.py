"""Where a sweep's time goes: fixed costs from the trials' spans and loop times, saved beside
the storage and read back by the dry run, whose wall estimate schedules the trials as Tune
does (longest first into the first free slot)."""

from __future__ import annotations

import pytest

from vidablate.sweep import timing
from vidablate.sweep.cost import TableCost, wall_estimate


def test_fixed_costs_are_what_the_trials_spent_outside_their_loops():
    """Two slots from the first start (100) to the last end (190): 180 slot-seconds, 60 of them
    in loops, 120 outside them over 3 trials (a trial process starting before Tune calls the
    trial started is outside every span, and still each trial's cost)."""
    spans = {"a": (100.0, 150.0), "b": (100.0, 130.0), "c": (152.0, 190.0)}
    loop = {"a": 30.0, "b": 10.0, "c": 20.0}
    t, total = timing.summarise(200.0, spans, loop, "sw", concurrency=2)
    assert total == 60.0
    assert t.trial_start_s == pytest.approx((90.0 * 2 - 60.0) / 3)
    assert t.sweep_start_s == pytest.approx(200.0 - 90.0)  # before the first, after the last
    assert (t.trials, t.sweep) == (3, "sw")
    line = timing.time_line(200.0, total, 2, t)
    assert "wall 200 s" in line and "60 s in all, 30 s at 2 at once: wall / loop = 6.67x" in line
    assert "fixed cost 40.0 s per trial (3 trials), 110 s per sweep" in line
    # more slots than trials: only the trials' own slots count
    one, _ = timing.summarise(10.0, {"a": (2.0, 7.0)}, {"a": 4.0}, "sw", concurrency=4)
    assert (one.trial_start_s, one.sweep_start_s) == (1.0, 5.0)


def test_timings_saved_on_a_storage_are_read_back(tmp_path):
    storage = str(tmp_path / "ray_results")
    assert timing.load(storage) is None
    t, _ = timing.summarise(10.0, {"a": (0.0, 5.0)}, {"a": 2.0}, "sw")
    timing.save(storage, t)
    assert timing.load(storage) == t
    (tmp_path / "ray_results" / timing.TIMINGS_FILE).write_text("{not json")
    assert timing.load(storage) is None  # a damaged file costs only the estimate


def test_timings_on_an_s3_storage(s3_server, aws):
    storage = f"s3://{s3_server.bucket('timings')}/ablations"
    t, _ = timing.summarise(10.0, {"a": (0.0, 5.0)}, {"a": 2.0}, "sw")
    timing.save(storage, t)
    assert timing.load(storage) == t
    assert f"ablations/{timing.TIMINGS_FILE}" in s3_server.keys("timings")


def test_wall_estimate_packs_trials_longest_first_into_free_slots():
    tc = TableCost(0, 0.0, 0.0, build=8.0, device="cpu",
                   trials={"a": 30.0, "b": 20.0, "c": 10.0, "d": 10.0})
    fixed, _ = timing.summarise(0.0, {}, {}, "sw")
    fixed.trial_start_s, fixed.sweep_start_s = 5.0, 7.0
    # 2 slots, 5 s start each: a 35 | b 25, c 25 -> 40, d 35 -> 50: makespan 50
    fixed.startup_s = 11.0
    assert wall_estimate(tc, 2, fixed) == pytest.approx(11.0 + 7.0 + 8.0 / 2 + 50.0)
    assert wall_estimate(tc, 1, fixed) == pytest.approx(11.0 + 7.0 + 8.0 + 90.0)
    assert wall_estimate(tc, 1, None) == pytest.approx(
        timing.STARTUP_S + timing.SWEEP_START_S + 8.0 + 70.0 + 4 * timing.TRIAL_START_S)


def test_start_up_is_measured_from_the_process_start_then_from_the_last_sweep(tmp_path,
                                                                             capsys):
    import os
    import time

    started = timing.process_started()
    assert started <= time.time()
    assert time.time() - started < time.time() - os.stat("/proc/1").st_mtime + 1  # after boot
    import dataclasses
    import json

    saved = dataclasses.asdict(timing.summarise(1.0, {"a": (0.0, 1.0)}, {}, "old")[0])
    del saved["startup_s"]
    (tmp_path / timing.TIMINGS_FILE).write_text(json.dumps(saved))
    old = timing.load(str(tmp_path))
    assert old.startup_s == timing.STARTUP_S  # a file written before the field existed
    before = time.time()
    timing.report("no-such-sweep", str(tmp_path), 5.0, 1, startup_s=3.0)
    assert timing.origin() >= before  # the next sweep of a multirun measures from here
