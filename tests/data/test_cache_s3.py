"""The feature cache on object storage, against a real S3 server (moto's, on 127.0.0.1): parts,
``.done`` markers and ``meta.json`` land in the bucket, readers stage them to node-local disk
under a bound (least recently used evicted first) and read the same features as a local cache,
partial and stale entries are rebuilt, two builders of one entry keep each other's parts, and
an unreachable endpoint names cache_path. The bucket keeps object versions, so a test sees
exactly which objects were (re)written."""

from __future__ import annotations

import filecmp
import inspect
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Dataset

from vidablate.data import cache
from vidablate.sweep.caching import cache_root

from ..services import free_port
from .test_cache import FROZEN, SMALL, _trial

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A new versioned bucket, the AWS variables set, and a staging folder of this test."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(cache.STAGE_ENV, str(tmp_path / "stage"))
    monkeypatch.delenv(cache.STAGE_GIB_ENV, raising=False)
    bucket = s3_server.bucket(f"cache-{uuid.uuid4().hex[:12]}")
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return SimpleNamespace(server=s3_server, bucket=bucket, client=client,
                           root=f"s3://{bucket}/cache")


def _keys(s3, prefix: str = "cache/") -> list[str]:
    """Object keys (not pyarrow's ``.../`` directory markers)."""
    return sorted(k for k in s3.server.keys(s3.bucket, prefix) if not k.endswith("/"))


def _versions(s3, prefix: str = "cache/") -> dict[str, int]:
    """Key -> how many times it was written (delete markers are not writes)."""
    pages = s3.client.get_paginator("list_object_versions").paginate(Bucket=s3.bucket,
                                                                      Prefix=prefix)
    out: dict[str, int] = {}
    for page in pages:
        for v in page.get("Versions", []):
            if not v["Key"].endswith("/"):
                out[v["Key"]] = out.get(v["Key"], 0) + 1
    return out


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


class _Encoder(torch.nn.Module):
    """The frozen prefix's interface ``build_part`` uses: [N, 3, H, W] -> [N, L, W] tokens."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.tokens, self.width = tokens, width

    def prefix(self, frames: torch.Tensor) -> torch.Tensor:
        base = frames.mean(dim=(1, 2, 3))[:, None, None]
        return base + torch.arange(self.tokens * self.width).reshape(1, self.tokens,
                                                                     self.width) * 1e-3


class _Clips(Dataset):
    def __init__(self, rows: int, frames: int) -> None:
        self.rows, self.frames = rows, frames

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"video": torch.rand(self.frames, 3, 4, 4, generator=g), "label": i % 3}


def _entry(root: str, name: str = "base", rows: int = 8, part_rows: int = 8, width: int = 16
           ) -> cache.Entry:
    """A small synthetic entry (rows x 2 frames x 8 tokens x width floats: 4 KiB a part of
    8 rows of width 16)."""
    key = f"{name}-{uuid.uuid4().hex[:8]}"
    return cache.Entry(name, key, cache.entry_root(root, key), {"select": "all", "name": name},
                       rows, 1,
                       False, 2, 8, width, "float32", part_rows)


def _build(entry: cache.Entry, parts: list[int] | None = None) -> list[int]:
    todo = cache.prepare(entry)
    for p in todo if parts is None else parts:
        cache.build_part(entry, _Clips(entry.rows, entry.frames),
                         _Encoder(entry.tokens, entry.width), p, CPU)
    return todo


def _entry_bytes(s3, entry: cache.Entry) -> int:
    """Bytes a reader stages: every part's ``.npy`` and ``.aux.npz``."""
    prefix = entry.root.split(f"{s3.bucket}/", 1)[1] + "/"
    objects = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]
    return sum(o["Size"] for o in objects if o["Key"].endswith((".npy", ".aux.npz")))


def test_parts_done_markers_and_meta_land_in_the_bucket_and_a_second_plan_builds_nothing(s3):
    cfg, net, data = _trial(data={"cache_part_rows": 16})
    p = cache.plan(cfg, net, data, s3.root)
    assert p.use, p.reason
    assert cache.build_local(p, data, net.frame_encoder, CPU, False, batch_size=4,
                             log=lambda *_: None) == sum(e.parts for e in p.entries.values())
    want = []
    for entry in p.entries.values():
        assert entry.root == f"{s3.root}/{entry.key}"
        want.append(f"cache/{entry.key}/meta.json")
        want += [f"cache/{entry.key}/part-{i:05d}{s}" for i in range(entry.parts)
                 for s in (".aux.npz", ".done", ".npy")]
    assert p.entries["train"].parts == 2  # 32 training clips in parts of 16
    assert _keys(s3) == sorted(want)
    train = p.entries["train"]
    meta = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"cache/{train.key}/meta.json")
                      ["Body"].read())
    assert meta["payload"] == json.loads(json.dumps(train.payload)) and meta["rows"] == 32
    written = _versions(s3)
    assert set(written.values()) == {1}
    again = cache.plan(cfg, net, data, s3.root)
    assert [e.key for e in again.entries.values()] == [e.key for e in p.entries.values()]
    assert all(cache.state(e) == ("complete", []) for e in again.entries.values())
    assert cache.build_local(again, data, net.frame_encoder, CPU, False, batch_size=4,
                             log=lambda *_: None) == 0
    assert _versions(s3) == written  # nothing rewritten, meta.json included


def test_reading_stages_to_local_disk_and_gives_the_features_of_a_local_cache(s3, tmp_path,
                                                                             monkeypatch):
    cfg, net, data = _trial(model={"trainable_blocks": 1, "mmb": False},
                            data={"cache_part_rows": 8})
    remote = cache.plan(cfg, net, data, s3.root)
    local = cache.plan(cfg, net, data, str(tmp_path / "local"))
    for p in (remote, local):
        cache.build_local(p, data, net.frame_encoder, CPU, False, batch_size=4,
                          log=lambda *_: None)
    node = tmp_path / "other-node"  # a reader whose disk holds none of the builder's copies
    monkeypatch.setenv(cache.STAGE_ENV, str(node))
    for name, entry in remote.entries.items():
        got, want = cache.CachedClips(entry), cache.CachedClips(local.entries[name])
        assert len(got) == len(want) == entry.rows
        for i in range(len(want)):
            a, b = got[i], want[i]
            assert torch.equal(a["tokens"], b["tokens"]), (name, i)
            assert torch.equal(a["imu"], b["imu"]) and int(a["label"]) == int(b["label"])
            assert a["valid"] == b["valid"]
        staged = sorted((node).glob(f"{entry.key}-*/part-*"))
        assert [re.sub(r"\.[0-9a-f]{16}\.", ".", p.name) for p in staged] == [
            f"part-{i:05d}{s}" for i in range(entry.parts) for s in (".aux.npz", ".npy")]
        for p in staged:  # byte for byte the files of the local cache
            plain = re.sub(r"\.[0-9a-f]{16}\.", ".", p.name)
            assert filecmp.cmp(p, tmp_path / "local" / entry.key / plain, shallow=False)
    train = remote.entries["train"]
    staged = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in node.glob(f"{train.key}-*/*")}
    cache.CachedClips(train)
    for p, (ino, mtime) in staged.items():  # read again: no download, but marked as used
        assert p.stat().st_ino == ino and p.stat().st_mtime_ns > mtime


def test_the_staging_bound_evicts_the_least_recently_used_files_first(s3, tmp_path,
                                                                     monkeypatch):
    entries = {n: _entry(s3.root, n) for n in ("a", "b", "c")}
    for e in entries.values():
        _build(e)
    size = _entry_bytes(s3, entries["a"])
    reader = tmp_path / "reader"
    monkeypatch.setenv(cache.STAGE_ENV, str(reader))
    monkeypatch.setenv(cache.STAGE_GIB_ENV, repr(2.5 * size / 2**30))  # two entries fit

    def staged() -> set[str]:
        return {p.parent.name.split("-")[0] for p in reader.glob("*/part-*")}

    cache.CachedClips(entries["a"])
    cache.CachedClips(entries["b"])
    assert staged() == {"a", "b"}
    cache.CachedClips(entries["a"])  # a is used again: b is now the least recently used
    cache.CachedClips(entries["c"])
    assert staged() == {"a", "c"}
    assert sum(p.stat().st_size for p in reader.glob("*/part-*")) <= 2.5 * size
    clips = cache.CachedClips(entries["b"])  # staged again from the bucket, a goes
    assert staged() == {"b", "c"} and len(clips) == 8


def test_a_part_or_an_entry_larger_than_the_bound_is_an_error_naming_the_knob(s3, monkeypatch):
    small = _entry(s3.root, rows=32, part_rows=16, width=512)  # 512 KiB a part
    monkeypatch.setenv(cache.STAGE_GIB_ENV, repr(small.part_bytes(0) / 2 / 2**30))
    with pytest.raises(cache.CacheError, match=f"more than {cache.STAGE_GIB_ENV}="):
        cache.prepare(small)
    assert _keys(s3) == []  # refused before anything is written
    with pytest.raises(cache.CacheError, match=cache.STAGE_GIB_ENV):
        cache.build_part(small, _Clips(32, 2), _Encoder(8, 512), 0, CPU)
    # room for one part at a time: the build goes part by part, a reader needs both at once
    monkeypatch.setenv(cache.STAGE_GIB_ENV, repr(1.5 * small.part_bytes(0) / 2**30))
    assert _build(small) == [0, 1] and cache.state(small) == ("complete", [])
    with pytest.raises(cache.CacheError, match=rf"reading entry base .*{cache.STAGE_GIB_ENV}"):
        cache.CachedClips(small)
    monkeypatch.setenv(cache.STAGE_GIB_ENV, "lots")
    with pytest.raises(cache.CacheError, match=f"{cache.STAGE_GIB_ENV}='lots'"):
        cache.state(small)


def test_a_part_without_done_a_damaged_part_and_a_changed_meta_are_rebuilt(s3, tmp_path,
                                                                          monkeypatch):
    entry = _entry(s3.root, rows=24, part_rows=8)
    assert _build(entry) == [0, 1, 2]
    prefix = f"cache/{entry.key}/"
    monkeypatch.setenv(cache.STAGE_ENV, str(tmp_path / "reader"))
    first = cache.CachedClips(entry)
    before = sorted((tmp_path / "reader").glob("*/part-00001.*.npy"))
    s3.client.delete_object(Bucket=s3.bucket, Key=f"{prefix}part-00001.done")  # a dead build
    assert cache.state(entry) == ("partial", [1])
    with pytest.raises(cache.CacheError, match="partial"):
        cache.CachedClips(entry)
    monkeypatch.setenv(cache.STAGE_ENV, str(tmp_path / "builder"))
    assert _build(entry) == [1]
    assert cache.state(entry) == ("complete", [])
    written = _versions(s3)
    assert written[f"{prefix}part-00001.npy"] == 2  # only part 1 was rewritten
    assert {k: n for k, n in written.items() if "part-00001" not in k} == dict.fromkeys(
        [f"{prefix}{n}" for n in ("meta.json", "part-00000.aux.npz", "part-00000.done",
                                  "part-00000.npy", "part-00002.aux.npz", "part-00002.done",
                                  "part-00002.npy")], 1)
    monkeypatch.setenv(cache.STAGE_ENV, str(tmp_path / "reader"))
    again = cache.CachedClips(entry)  # the rebuilt part is staged anew, not the old copy
    after = sorted((tmp_path / "reader").glob("*/part-00001.*.npy"))
    assert len(after) == 2 and before[0] in after
    assert all(torch.equal(again[i]["tokens"], first[i]["tokens"]) for i in range(24))
    s3.client.put_object(Bucket=s3.bucket, Key=f"{prefix}part-00002.npy", Body=b"damaged")
    assert cache.state(entry) == ("partial", [2])
    meta_key = f"{prefix}meta.json"
    meta = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=meta_key)["Body"].read())
    meta["payload"]["weights"] = "another version"
    s3.client.put_object(Bucket=s3.bucket, Key=meta_key, Body=json.dumps(meta).encode())
    assert cache.state(entry) == ("stale", [0, 1, 2])
    assert cache.prepare(entry) == [0, 1, 2]
    assert _keys(s3) == [meta_key]  # the stale parts went before the new meta.json
    assert json.loads(s3.client.get_object(Bucket=s3.bucket, Key=meta_key)["Body"].read()
                      )["payload"] == entry.payload
    _build(entry)
    assert cache.state(entry) == ("complete", [])


def test_two_builders_of_different_parts_of_one_entry_keep_both_parts(s3):
    entry = _entry(s3.root, rows=16, part_rows=8)
    prefix = f"cache/{entry.key}/"
    assert cache.prepare(entry) == [0, 1]  # builder A
    assert cache.prepare(entry) == [0, 1]  # builder B, before A has a part
    _build(entry, [0])  # A (its prepare again finds part 0 to do)
    assert cache.prepare(entry) == [1]  # B: A's part stays, meta.json is not written over
    cache.build_part(entry, _Clips(16, 2), _Encoder(8, 16), 1, CPU)
    assert cache.state(entry) == ("complete", [])
    assert _versions(s3) == dict.fromkeys(_keys(s3), 1)  # every object written once
    assert _keys(s3) == [f"{prefix}meta.json"] + [f"{prefix}part-{i:05d}{s}" for i in (0, 1)
                                                 for s in (".aux.npz", ".done", ".npy")]


def test_two_builder_processes_of_one_entry_keep_both_parts(s3):
    entry = _entry(s3.root, rows=16, part_rows=8)
    script = "\n".join([  # this module's doubles, without its imports (Ray, the models)
        "import json, sys, torch", "from torch.utils.data import Dataset",
        "from vidablate.data import cache", inspect.getsource(_Encoder),
        inspect.getsource(_Clips), "entry = cache.Entry(**json.loads(sys.argv[1]))",
        "part = int(sys.argv[2])", "assert part in cache.prepare(entry)",
        "cache.build_part(entry, _Clips(16, 2), _Encoder(8, 16), part, torch.device('cpu'))"])
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    procs = [subprocess.Popen([sys.executable, "-c", script, json.dumps(entry.to_dict()),
                               str(part)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
             for part in (0, 1)]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    assert cache.state(entry) == ("complete", [])
    written = _versions(s3)
    assert {k: n for k, n in written.items() if "part-" in k} == dict.fromkeys(
        [f"cache/{entry.key}/part-{i:05d}{s}" for i in (0, 1)
         for s in (".aux.npz", ".done", ".npy")], 1)  # neither part was written over
    clips = cache.CachedClips(entry)
    want = cache.compute_tokens(_Encoder(8, 16), _Clips(16, 2)[12]["video"][None], "all")[0]
    assert torch.equal(clips[12]["tokens"], want)


def test_an_unreachable_endpoint_is_an_error_naming_cache_path(s3, monkeypatch):
    """(pyarrow retries for a few seconds before it gives up.)"""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(cache.CacheError, match=re.escape(f"cache_path='{s3.root}'")) as info:
        cache.prepare(_entry(s3.root))
    assert "NETWORK_CONNECTION" in str(info.value) and "AWS_ENDPOINT_URL" in str(info.value)


def test_a_root_with_the_key_and_pyarrow_options_in_its_uri_keeps_them_and_hides_the_secret(
        s3, monkeypatch):
    endpoint = s3.server.endpoint.removeprefix("http://")
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    root = (f"s3://AKIDTEST:uri-s3cret-value@{s3.bucket}/cache?scheme=http&"
            f"endpoint_override={endpoint}")
    entry = _entry(root, rows=16)
    assert entry.root.endswith(f"/cache/{entry.key}?scheme=http&endpoint_override={endpoint}")
    _build(entry)
    assert _keys(s3) == [f"cache/{entry.key}/{n}" for n in (
        "meta.json", "part-00000.aux.npz", "part-00000.done", "part-00000.npy",
        "part-00001.aux.npz", "part-00001.done", "part-00001.npy")]
    assert len(cache.CachedClips(entry)) == 16
    s3.client.delete_object(Bucket=s3.bucket, Key=f"cache/{entry.key}/part-00001.done")
    with pytest.raises(cache.CacheError, match="is partial") as info:
        cache.CachedClips(entry)
    assert "uri-s3cret-value" not in str(info.value) and "AKIDTEST:***@" in str(info.value)
    # a sweep on s3:// storage: the derived cache root is on the object store too
    cfg, net, data = _trial()
    p = cache.plan(cfg, net, data, cache_root(None, f"s3://{s3.bucket}/ray/"))
    assert p.use and p.entries["train"].root == (f"s3://{s3.bucket}/ray/feature_cache/"
                                                 f"{p.entries['train'].key}")


def test_a_trial_reading_an_s3_cache_gives_the_metrics_of_an_uncached_one(s3, tmp_path,
                                                                         monkeypatch):
    from vidablate.train import loop  # as in test_cache: the loop pulls in Ray Train

    from ..fakes import FakeTrain

    exp = {"model": FROZEN, "data": SMALL,
           "trainer": {"epochs": 2, "batch_size": 4, "num_workers": 0, "lr_new": 1e-2}}
    runs = {}
    for mode in ("off", "auto"):
        fake = FakeTrain(tmp_path / mode)
        (tmp_path / mode).mkdir()
        with monkeypatch.context() as m:
            fake.install(m)
            loop.train_loop_per_worker({"experiment": exp, "mlflow_run_id": None,
                                        "cache": {"mode": mode, "root": s3.root}})
        runs[mode] = fake.reports
    assert runs["auto"][0]["feature_cache"] == 1.0 and _keys(s3)
    for off, on in zip(runs["off"], runs["auto"], strict=True):
        for key in ("train_loss", "base_acc", "novel_acc", "hm"):
            assert on[key] == pytest.approx(off[key], rel=1e-5, abs=1e-5), key
