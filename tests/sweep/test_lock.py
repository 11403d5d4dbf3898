"""One launch of a sweep at a time: the second fails at once naming the first, a crashed
holder's lock is taken over (dead pid on this host, or no refresh from another host), and a
new sqlite tracking store is created once when several launches start together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from vidablate.errors import ConfigError
from vidablate.sweep.lock import SweepLock, store_created, sweep_lock


def test_second_launch_fails_naming_the_first(tmp_path):
    path = tmp_path / "sw.lock"
    with SweepLock(path, "vidablate ablate space=a"):
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        with pytest.raises(ConfigError) as err:
            SweepLock(path, "vidablate ablate space=a").acquire()
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(err.value)
        assert "vidablate ablate space=a" in str(err.value) and str(path) in str(err.value)
    assert not path.exists()  # released
    nested = tmp_path / "new" / "storage" / "sw.lock"
    with SweepLock(nested):
        assert nested.exists()
    assert not (tmp_path / "new").exists()  # folders made for the lock alone are removed
    with SweepLock(path):  # and free again
        pass


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "sw.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                "started": time.time()}))
    with SweepLock(path) as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_other_hosts_lock_is_stale_only_without_refresh(tmp_path):
    path = tmp_path / "sw.lock"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": time.time()}))
    with pytest.raises(ConfigError, match="on host elsewhere"):
        SweepLock(path, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    with SweepLock(path, stale_after=60):
        assert json.loads(path.read_text())["host"] == socket.gethostname()


def test_holder_refreshes_its_lock(tmp_path):
    path = tmp_path / "sw.lock"
    with SweepLock(path, heartbeat=0.05):
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 5


def test_a_lock_taken_over_is_not_removed_by_its_old_holder(tmp_path):
    path = tmp_path / "sw.lock"
    lock = SweepLock(path)
    lock.acquire()
    path.write_text(json.dumps({"host": "elsewhere", "pid": 7, "started": time.time()}))
    lock.release()
    assert path.exists()


def test_launches_racing_for_a_lock_see_the_winners_record_whole(tmp_path):
    """Eight launches start together: one holds the lock, every other one names its pid (a
    lock created empty and filled after showed the losers "pid ?")."""
    path, go = tmp_path / "sw.lock", time.time() + 3
    code = ("import sys, time, os; from vidablate.sweep.lock import SweepLock\n"
            "from vidablate.errors import ConfigError\n"
            "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
            "try:\n"
            "    lock = SweepLock(sys.argv[1]); lock.acquire()\n"
            "    print('won', os.getpid()); sys.stdout.flush(); time.sleep(4); lock.release()\n"
            "except ConfigError as e:\n"
            "    print('lost', e)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    out = [p.communicate(timeout=120)[0].strip() for p in procs]
    won = [line.split()[1] for line in out if line.startswith("won")]
    assert len(won) == 1, out
    lost = [line for line in out if line.startswith("lost")]
    assert len(lost) == 7 and all(f"pid {won[0]} on host" in line for line in lost), out
    assert not list(tmp_path.iterdir())  # neither the lock nor a draft is left


def test_cloud_storage_holds_no_lock_file(tmp_path):
    with sweep_lock("s3://bucket/ablations", "sw", ""):
        pass
    with sweep_lock(str(tmp_path), "sw", "cmd") as lock:
        assert (tmp_path / "sw.lock").exists() and lock.command == "cmd"


def test_new_sqlite_store_created_once_by_concurrent_launches(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = ("import sys; from mlflow.tracking import MlflowClient; "
            "from vidablate.sweep.lock import store_created\n"
            "with store_created(sys.argv[1]):\n"
            "    MlflowClient(sys.argv[1]).search_experiments()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    with store_created(uri):
        pass
