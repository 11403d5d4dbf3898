"""Frozen-backbone feature cache: the output of the frozen visual prefix, computed once per
(dataset split, sampled view, backbone weights, k frozen blocks, T, resolution) and read by
every trial and epoch that needs it instead of decoding video and running the frozen blocks.

What is cached. ``FrameEncoder.split`` = k is the number of leading ViT blocks that hold no
trainable parameter and no paper hook (``vidablate.backbone.FrameEncoder``). The cache stores
the tokens after those k blocks: every token when a trainable or hooked tail follows (IS-CLIP
tunes the last 2 blocks), only the CLS token when the whole tower is frozen and nothing reads
patch tokens (MotionPrompt, OmniCLIP's frame-level rows), CLS + patches when a module reads
them (X-CLIP's video-specific prompt). ``ln_post`` and the projection always run in the trial,
so a trainable projection still trains.

When a trial uses it (``plan``): the prefix must be non-empty (no full fine-tuning, no hook on
block 1 such as OmniCLIP's SPG/TE), no pixel mixing (MixUp/CutMix), and a filesystem path or
an ``s3://`` URI to store it. The inputs must be deterministic for a given view: evaluation views are; a training
clip whose frames are drawn at random (TSN jitter, augmentation, a shorter clip from a longer
video) is cached as V = min(``data.cache_train_views``, epochs) fixed draws, and epoch e reads
draw e mod V;
``data.cache_train_views=0`` turns the cache off for such trials instead (same random input
distribution as uncached training). A deterministic training input is drawn once.

Layout: ``<root>/<key>/meta.json`` (the key's payload and the array shapes), then per part of
``part_rows`` rows ``part-00000.npy`` (tokens [n, V, T, L, W]), ``part-00000.aux.npz``
(labels, valid, imu) and ``part-00000.done``, written last. The key hashes everything the
features depend on, so changed weights, T, resolution, sampling or records give a new key;
a part without its ``.done`` or with the wrong shape is rebuilt (partial or damaged cache), and
a ``meta.json`` whose payload differs from the expected one is stale and rebuilt.

Disk space: ``prepare`` checks that the parts still to build fit in the folder's free space and
``build_part`` checks each part again before writing it (NoSpaceError ahead of the write). A
write that still runs out of space removes that part's files (temporary and renamed, and its
``.done``) and raises NoSpaceError, so a failed build leaves only complete parts.

Object storage (``cache_path=s3://bucket/prefix``, or a cache root under an ``s3://``
``storage_path``): the same layout, one object per file, reached through ``pyarrow.fs``
(``FileSystem.from_uri``, which reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION and AWS_ENDPOINT_URL). A builder writes a part into the node-local staging
folder (the same atomic local writes and free-space checks as above), uploads ``.npy`` and
``.aux.npz`` straight to their final keys and then ``.done``; a reader (``CachedClips``)
downloads the entry's files into the staging folder on first read and maps those copies.
Why the final keys and not a temporary key plus a copy: an S3 PUT (or a completed multipart
upload) is atomic per object, so no reader ever sees half an object, and a part counts only
once its ``.done`` exists, which is written after both files and deleted before a rebuild
starts; a temporary key would double the bytes moved (S3 has no rename) and leave orphans
behind a crash. ``meta.json`` is written only when absent or stale (never over an equal one),
and every part is its own objects, so builders on two nodes that build different parts of one
entry do not clobber each other. A staged copy is named after its ``.done`` (which holds a
build id), so a rebuilt part is downloaded again instead of a stale copy being read.

Staging knobs (environment, read at each use):

- ``VIDABLATE_CACHE_STAGE``: the node-local staging folder (default
  ``<tempfile.gettempdir()>/vidablate-cache-stage``);
- ``VIDABLATE_CACHE_STAGE_GIB``: the most it holds, in GiB (default 20). Staging evicts the
  least recently used (staged or read longest ago) files first to stay under it; a part, or an
  entry to read, larger than the bound is a CacheError that names the knob. A file evicted
  while another process on the node maps it stays readable to that process (Linux frees it on
  unmapping), and two builders checking the bound at once can overshoot it by a part each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import NoSpaceError, ensure_space, no_space_error
from .clips import ManifestClips
from .synthetic import SyntheticVideoIMU

CACHE_FORMAT = 1
"""Bump when the stored layout or what the prefix computes changes (invalidates every key)."""
MODES = ("auto", "off", "require")
"""``cache=`` on the command line: use when possible (and say why not) | never | fail a trial
that cannot use it."""
DTYPES = {"float32": np.float32, "float16": np.float16}
WRITE_MARGIN = 64 * 2**10
"""Bytes added to a part's arrays for the free-space check: file headers, the zip directory
of the ``.aux.npz``, ``.done`` and ``meta.json``."""
REMOTE_SCHEMES = ("s3",)
"""URI schemes of a cache root on object storage (anything else with ``://`` is refused)."""
STAGE_ENV = "VIDABLATE_CACHE_STAGE"
STAGE_GIB_ENV = "VIDABLATE_CACHE_STAGE_GIB"
STAGE_GIB_DEFAULT = 20.0
ABANDONED_S = 24 * 3600
"""A staging file still being written after this long belongs to a dead process: evictable."""


class CacheError(RuntimeError):
    """A cache entry cannot be built or read; the message names the entry and the cause."""


@dataclass(frozen=True)
class Entry:
    """One cached dataset (a split, or a k-shot subset of one) under one sampling."""

    name: str
    """The protocol's name for it: ``train`` or an evaluation set (``base``, ``novel``, ...)."""
    key: str
    root: str
    """Folder of this entry (``<cache root>/<key>``)."""
    payload: dict[str, Any]
    rows: int
    views: int
    """Views stored per row: fixed training draws, or the evaluation views."""
    train: bool
    frames: int
    tokens: int
    width: int
    dtype: str
    part_rows: int

    @property
    def parts(self) -> int:
        return max(1, -(-self.rows // self.part_rows))

    @property
    def bytes(self) -> int:
        per = self.views * self.frames * self.tokens * self.width
        return self.rows * per * np.dtype(DTYPES[self.dtype]).itemsize

    def part_bytes(self, part: int) -> int:
        """Bytes one part writes: its tokens, labels and validity (IMU cuts are counted when
        the part is written, once their shape is known) plus WRITE_MARGIN."""
        start, stop = self.part_range(part)
        rows = stop - start
        per = self.views * self.frames * self.tokens * self.width
        return (rows * per * np.dtype(DTYPES[self.dtype]).itemsize + rows * 8
                + rows * self.views + WRITE_MARGIN)

    def part_range(self, part: int) -> tuple[int, int]:
        start = part * self.part_rows
        return start, min(start + self.part_rows, self.rows)

    def path(self, part: int, suffix: str) -> Path:
        """A part's file under a local root (``_Store`` reaches object-store roots)."""
        return Path(self.root) / _name(part, suffix)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CachePlan:
    """Whether one trial reads the cache, why (not), and the entries it reads."""

    use: bool
    reason: str
    entries: dict[str, Entry] = field(default_factory=dict)
    whole_tower: bool = False
    """Only CLS (+ patch) tokens are read: the trial trains light modules only (packable)."""

    def line(self) -> str:
        if not self.use:
            return f"off ({self.reason})"
        size = sum(e.bytes for e in self.entries.values()) / 2**20
        return f"on ({self.reason}; {len(self.entries)} entries, {size:.1f} MiB)"


def prefix_tensors(frame_encoder: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weights the cached tokens depend on: the patch embedding, class and position
    embeddings, ``ln_pre`` and the first ``split`` blocks (in a fixed order)."""
    visual = frame_encoder.visual
    out: list[tuple[str, torch.Tensor]] = []
    for name, module in [("conv1", visual.conv1), ("ln_pre", visual.ln_pre),
                         *[(f"block{i}", b) for i, b in
                           enumerate(visual.transformer.resblocks[: frame_encoder.split])]]:
        out += [(f"{name}.{k}", v) for k, v in module.state_dict().items()]
    out += [("class_embedding", visual.class_embedding.data),
            ("positional_embedding", visual.positional_embedding.data)]
    return out


def weights_hash(frame_encoder: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in prefix_tensors(frame_encoder):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def token_selection(frame_encoder: torch.nn.Module) -> tuple[str, int]:
    """(``cls`` | ``cls+patches`` | ``all``, tokens kept per frame)."""
    gh, gw = frame_encoder.grid
    depth = len(frame_encoder.visual.transformer.resblocks)
    if frame_encoder.split < depth:
        return "all", 1 + gh * gw
    if frame_encoder.return_patches:
        return "cls+patches", 1 + gh * gw
    return "cls", 1


def dataset_fingerprint(ds: Dataset) -> dict[str, Any]:
    """What a dataset's items depend on (JSON-able): generator spec or manifest records,
    sampling, row selection. Unknown dataset types raise CacheError."""
    if isinstance(ds, Subset):
        inner = dataset_fingerprint(ds.dataset)
        return {"subset_of": inner, "rows": _digest([int(i) for i in ds.indices])}
    if isinstance(ds, SyntheticVideoIMU):
        return {"kind": "synthetic", "spec": dataclasses.asdict(ds.spec), "split": ds.split,
                "indices": _digest(ds.indices.tolist()),
                "sampling": _sampling(ds.sampling), "identity": ds.sampling is None}
    if isinstance(ds, ManifestClips):
        return {"kind": "manifest", "records": _digest(ds.records), "root": str(ds.root),
                "sampling": _sampling(ds.sampling), "decoder": ds.decoder, "fps": ds.fps,
                "imu_rate": ds.imu_rate, "use_imu": ds.use_imu, "on_corrupt": ds.on_corrupt}
    raise CacheError(f"no feature-cache fingerprint for dataset type {type(ds).__name__}")


def _sampling(sampling: Any) -> Any:
    return None if sampling is None else json.loads(json.dumps(dataclasses.asdict(sampling),
                                                               default=str))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def train_input_random(ds: Dataset) -> bool:
    """True when two reads of the same training clip can differ (TSN jitter, a random dense
    window, augmentation): only the synthetic identity path (every rendered frame once,
    unaugmented) is deterministic."""
    inner = ds.dataset if isinstance(ds, Subset) else ds
    return not (isinstance(inner, SyntheticVideoIMU) and inner.sampling is None)


def precision(cfg: Any) -> str:
    """The numeric path the prefix runs in for this trial (part of the key)."""
    return "bf16-autocast" if cfg.trainer.use_gpu and cfg.trainer.amp else "fp32"


def plan(cfg: Any, model: torch.nn.Module, data: Any, root: str | None, mode: str = "auto"
         ) -> CachePlan:
    """Decide whether this trial reads the cache and which entries (``cfg`` an
    ExperimentConfig, ``data`` its ProtocolData, ``model`` its VideoCLIP after seeding)."""
    if mode in (False, None, "off", "false"):
        return CachePlan(False, "cache=off")
    if mode not in MODES:
        raise CacheError(f"cache={mode!r}: use one of {MODES}")
    fe = model.frame_encoder
    depth = len(fe.visual.transformer.resblocks)
    if fe.split == 0:
        first = fe.blocks[0] if len(fe.blocks) else None
        hooks = [type(getattr(first, k)).__name__ for k in ("pre", "message", "attention",
                                                           "adapter")
                 if first is not None and getattr(first, k) is not None]
        why = ("full fine-tuning" if fe.full_finetune else
               f"block 1 carries {', '.join(hooks)}" if hooks else "block 1 is trained")
        return CachePlan(False, f"no frozen visual prefix: {why}")
    if cfg.data.mixup or cfg.data.cutmix:
        return CachePlan(False, "data.mixup/cutmix mix pixels before the frozen blocks")
    if not root:
        return CachePlan(False, "no cache folder")
    scheme = _scheme(root)
    if scheme is not None and scheme not in REMOTE_SCHEMES:
        return CachePlan(False, f"the cache needs a filesystem path (local or shared) or an "
                                f"s3:// URI, not {_redact(root)!r}; pass cache_path=<shared "
                                f"folder> or cache_path=s3://<bucket>/<prefix>")
    views, random_train = 1, False
    if cfg.trainer.epochs > 0 and data.train is not None and train_input_random(data.train):
        views, random_train = min(cfg.data.cache_train_views, cfg.trainer.epochs), True
        if views == 0:
            return CachePlan(False, "random training input (sampling jitter/augmentation) and "
                                    "data.cache_train_views=0")
    select, tokens = token_selection(fe)
    common = {"format": CACHE_FORMAT, "backbone": cfg.model.backbone,
              "weights": weights_hash(fe), "k": fe.split, "depth": depth, "select": select,
              "frames": cfg.data.num_frames, "resolution": cfg.data.image_size,
              "precision": precision(cfg), "dtype": cfg.data.cache_dtype}
    width = int(fe.visual.transformer.width)
    sets: list[tuple[str, Dataset, bool, int]] = []
    if cfg.trainer.epochs > 0 and data.train is not None:
        sets.append(("train", data.train, True, views))
    sets += [(s.name, s.dataset, False, cfg.eval.views) for s in data.evals]
    entries = {}
    for name, ds, train, v in sets:
        payload = {**common, "data": dataset_fingerprint(ds), "train": train, "views": v,
                   "draw_seed": cfg.data.seed if train and random_train else None}
        key = _digest(payload)[:32]
        entries[name] = Entry(name, key, entry_root(root, key), payload, len(ds), v, train,
                              cfg.data.num_frames, tokens, width, cfg.data.cache_dtype,
                              cfg.data.cache_part_rows)
    what = (f"visual blocks 1-{fe.split} of {depth} frozen" if fe.split < depth
            else "whole visual tower frozen")
    draws = f", {views} fixed training draws" if views > 1 else ""
    return CachePlan(True, f"{what}, {select} tokens{draws}", entries, select != "all")


def state(entry: Entry) -> tuple[str, list[int]]:
    """(``complete`` | ``partial`` | ``stale`` | ``missing``, parts to build)."""
    status, todo, _ = _state(_Store(entry))
    return status, todo


def _state(store: _Store) -> tuple[str, list[int], dict[str, int]]:
    """``state`` plus the entry's files (name: bytes), listed once."""
    entry = store.entry
    every = list(range(entry.parts))
    files = store.files()
    if "meta.json" not in files:
        return "missing", every, files
    try:
        saved = json.loads(store.read("meta.json"))
    except (OSError, json.JSONDecodeError):
        return "stale", every, files
    if saved.get("payload") != _jsonable(entry.payload) or saved.get("rows") != entry.rows:
        return "stale", every, files
    todo = [p for p in every if not _part_ok(store, files, p)]
    return ("complete" if not todo else "partial"), todo, files


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _name(part: int, suffix: str) -> str:
    return f"part-{part:05d}{suffix}"


def _scheme(root: str) -> str | None:
    return root.split("://", 1)[0].lower() if "://" in root else None


def entry_root(root: str, key: str) -> str:
    """The folder of entry ``key`` under a cache root: a path, or a URI whose query (pyarrow's
    options such as ``?endpoint_override=...``) stays at its end."""
    if _scheme(root) is None:
        return str(Path(root) / key)
    base, sep, query = root.partition("?")
    return f"{base.rstrip('/')}/{key}{sep}{query}"


def _redact(uri: str) -> str:
    """A URI for messages: a password (secret key) in it as ``***``."""
    return re.sub(r"//([^/:@]+):[^/@]*@", r"//\1:***@", uri)


def _part_ok(store: _Store, files: dict[str, int], part: int) -> bool:
    """The part has its ``.done`` and ``.aux.npz``, and a ``.npy`` of the right shape, dtype
    and length (read from its header)."""
    entry = store.entry
    if not {_name(part, s) for s in (".done", ".npy", ".aux.npz")} <= files.keys():
        return False
    start, stop = entry.part_range(part)
    shape = (stop - start, entry.views, entry.frames, entry.tokens, entry.width)
    header = store.npy_header(_name(part, ".npy"))
    if header is None:
        return False
    dtype = np.dtype(DTYPES[entry.dtype])
    got_shape, got_dtype, data_bytes = header
    return (tuple(got_shape) == shape and got_dtype == dtype
            and data_bytes == int(np.prod(shape)) * dtype.itemsize)


def _meta(entry: Entry) -> bytes:
    return json.dumps(
        {"payload": _jsonable(entry.payload), "rows": entry.rows, "views": entry.views,
         "shape": [entry.frames, entry.tokens, entry.width], "dtype": entry.dtype,
         "part_rows": entry.part_rows}, indent=1).encode()


def prepare(entry: Entry) -> list[int]:
    """Make the entry's folder consistent before building: a stale entry is wiped, the meta
    file written when absent or stale (an equal one is left alone: another builder may be
    writing parts under it); returns the parts still to build. The free space for them is
    checked first (the folder's, or for an object store each part against the staging bound
    and the staging disk)."""
    store = _Store(entry)
    status, todo, files = _state(store)
    if status == "complete":
        return []
    if status == "stale":
        store.delete([n for n in files if n.startswith("part-")])
    store.reserve([entry.part_bytes(p) for p in todo])
    if status != "partial":
        store.put("meta.json", _meta(entry))
    return todo


def _atomic_write(path: Path, blob: bytes) -> None:
    _write_atomic(path, lambda f: f.write(blob), len(blob) + WRITE_MARGIN)


def _env_key() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@functools.lru_cache(maxsize=32)
def _filesystem(uri: str, env: tuple[tuple[str, str], ...]) -> tuple[pafs.FileSystem, str]:
    """``FileSystem.from_uri`` once per URI and AWS environment (``env`` is only the key)."""
    return pafs.FileSystem.from_uri(uri)


class _Stage:
    """The node-local staging folder of object-store entries and its bound (the knobs of the
    module docstring). Files are evicted least recently used first (mtime: set when a file is
    staged and again on every read)."""

    def __init__(self) -> None:
        self.folder = Path(os.environ.get(STAGE_ENV) or
                           Path(tempfile.gettempdir()) / "vidablate-cache-stage")
        raw = os.environ.get(STAGE_GIB_ENV, "").strip()
        try:
            gib = float(raw) if raw else STAGE_GIB_DEFAULT
        except ValueError:
            gib = -1.0
        if not gib > 0:
            raise CacheError(f"{STAGE_GIB_ENV}={raw!r}: give the feature cache's staging bound "
                             f"in GiB, a number > 0 (default {STAGE_GIB_DEFAULT:g})")
        self.gib, self.bound = gib, int(gib * 2**30)

    def check(self, need: int, what: str, fix: str = " or smaller parts "
              "(data.cache_part_rows)") -> None:
        """CacheError when ``need`` bytes can never fit the bound."""
        if need > self.bound:
            raise CacheError(f"feature cache: {what} needs {need / 2**30:.3g} GiB of node-local "
                             f"staging, more than {STAGE_GIB_ENV}={self.gib:g} allows "
                             f"(staging folder {self.folder}); raise {STAGE_GIB_ENV}{fix}")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One process of the node stages or evicts at a time."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / ".lock")):
            yield

    def make_room(self, need: int, keep: Iterable[Path] = ()) -> None:
        """Evict staged files, least recently used first and never those in ``keep`` or being
        written, until ``need`` more bytes fit the bound; then check the disk's free space
        (NoSpaceError). Call under ``locked``."""
        keep = {Path(k) for k in keep}
        now = time.time()
        used, evictable = 0, []
        for dirpath, _, names in os.walk(self.folder):
            busy_dir = Path(dirpath).name.startswith(".build-")
            for n in names:
                path = Path(dirpath) / n
                if n == ".lock":
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                used += st.st_size
                busy = (busy_dir or n.startswith(".")) and now - st.st_mtime < ABANDONED_S
                if not busy and path not in keep:
                    evictable.append((st.st_mtime_ns, st.st_size, path))
        for _, size, path in sorted(evictable):
            if used + need <= self.bound:
                break
            path.unlink(missing_ok=True)
            used -= size
            if path.parent != self.folder:
                with contextlib.suppress(OSError):  # not empty, or gone already
                    path.parent.rmdir()
        if used + need > self.bound:
            raise CacheError(f"feature cache: the staging folder {self.folder} holds "
                             f"{used / 2**30:.3g} GiB that cannot be evicted now (being "
                             f"written or read), no room for {need / 2**30:.3g} GiB more under "
                             f"{STAGE_GIB_ENV}={self.gib:g}; raise {STAGE_GIB_ENV}")
        ensure_space(self.folder, need)

    @staticmethod
    def touch(paths: Iterable[Path]) -> None:
        t = time.time_ns()
        for path in paths:
            os.utime(path, ns=(t, t))


class _Store:
    """An entry's folder through ``pyarrow.fs``: a local folder (files written and read in
    place, as before object storage) or a prefix on an object store (files built and read in
    the node-local ``_Stage``). Object-store failures become CacheError naming cache_path."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.remote = "://" in entry.root
        base, sep, query = entry.root.partition("?")
        self.cache_path = _redact(f"{base.rsplit('/', 1)[0]}{sep}{query}") if self.remote \
            else str(Path(entry.root).parent)
        if self.remote:
            with self.reaching("opening the object store"):
                self.fs, self.base = _filesystem(entry.root, _env_key())
            self.stage = _Stage()
            self.local = self.stage.folder / f"{entry.key}-{_digest(entry.root)[:8]}"
        else:
            self.fs, self.base = pafs.LocalFileSystem(), os.path.abspath(entry.root)
            self.local = Path(entry.root)

    @contextlib.contextmanager
    def reaching(self, what: str) -> Iterator[None]:
        """Object-store errors (unreachable endpoint, credentials, ...) as CacheError."""
        try:
            yield
        except (CacheError, NoSpaceError):
            raise
        except (OSError, pa.ArrowException) as err:
            if not self.remote:
                raise
            raise CacheError(f"feature cache at cache_path={self.cache_path!r}: {what} failed: "
                             f"{err}; check the endpoint (AWS_ENDPOINT_URL) and credentials, "
                             f"or pass cache=off") from err

    def _key(self, name: str) -> str:
        return f"{self.base}/{name}"

    def files(self) -> dict[str, int]:
        """The entry's files (not the temporary ``.``-names): name -> bytes."""
        with self.reaching(f"listing entry {self.entry.key}"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return {i.base_name: i.size for i in infos
                if i.type == pafs.FileType.File and not i.base_name.startswith(".")}

    def read(self, name: str) -> bytes:
        with self.reaching(f"reading {name}"), self.fs.open_input_stream(
                self._key(name), compression=None) as f:
            return f.readall()

    def npy_header(self, name: str) -> tuple[tuple[int, ...], np.dtype, int] | None:
        """(shape, dtype, bytes after the header) of a ``.npy``, or None when unreadable;
        one ranged read of its head."""
        try:
            with self.reaching(f"reading {name}"), self.fs.open_input_file(
                    self._key(name)) as f:
                size = f.size()
                head = io.BytesIO(f.read(min(size, 1 << 16)))
            version = np.lib.format.read_magic(head)
            readers = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                return None
            shape, _, dtype = readers[version](head)
            return shape, dtype, size - head.tell()
        except (OSError, ValueError, EOFError):
            return None

    def delete(self, names: Iterable[str]) -> None:
        with self.reaching("deleting stale files"):
            for n in names:
                if self.remote:
                    self.fs.delete_file(self._key(n))
                else:
                    (self.local / n).unlink(missing_ok=True)

    def put(self, name: str, blob: bytes) -> None:
        """Write a small file whole: atomically (temporary name, rename) or one PUT."""
        if not self.remote:
            self.local.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.local / name, blob)
            return
        with self.reaching(f"writing {name}"), self.fs.open_output_stream(
                self._key(name)) as f:
            f.write(blob)

    def reserve(self, parts: list[int]) -> None:
        """Room for building ``parts`` (their bytes): all of them in a local folder; each in
        turn in the staging folder for an object store."""
        if not self.remote:
            ensure_space(self.local, sum(parts))
            self.local.mkdir(parents=True, exist_ok=True)
            return
        if parts:
            self.stage.check(max(parts), f"a part of entry {self.entry.name}")
            ensure_space(self.stage.folder, max(parts))

    def room(self, need: int, part: int) -> None:
        """Room to write one part's ``need`` bytes where it is built (NoSpaceError; for an
        object store also the staging bound, evicting old staged files)."""
        if not self.remote:
            ensure_space(self.entry.root, need)
            return
        self.stage.check(need, f"part {part} of entry {self.entry.name}")
        with self.stage.locked():
            self.stage.make_room(need)

    def build_folder(self) -> Path:
        """Where a part's files are written before they count: the entry's folder, or a new
        folder in the staging area for an object store."""
        if not self.remote:
            return self.local
        folder = self.local / f".build-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        return folder

    def unpublish(self, part: int) -> None:
        """The part is incomplete until its new ``.done``: remove the old one first."""
        done = _name(part, ".done")
        if not self.remote:
            (self.local / done).unlink(missing_ok=True)
            return
        with self.reaching(f"deleting {done}"):
            if self.fs.get_file_info(self._key(done)).type != pafs.FileType.NotFound:
                self.fs.delete_file(self._key(done))

    def publish(self, part: int, built: list[Path], done: bytes) -> None:
        """Make a part count: write its ``.done`` after its files (uploaded first to their
        final keys for an object store, whose local copies then become staged copies)."""
        if not self.remote:
            _atomic_write(self.local / _name(part, ".done"), done)
            return
        for path in built:
            with self.reaching(f"writing {path.name}"), open(path, "rb") as src, \
                    self.fs.open_output_stream(self._key(path.name)) as out:
                out.upload(src)
        self.put(_name(part, ".done"), done)
        staged = [self.local / self._staged(part, path.name, done) for path in built]
        for path, dest in zip(built, staged, strict=True):
            os.replace(path, dest)
        self.stage.touch(staged)

    @staticmethod
    def _staged(part: int, name: str, done: bytes) -> str:
        """A staged copy's name: the build id (a digest of ``.done``) before the suffix."""
        version = hashlib.sha256(done).hexdigest()[:16]
        return name.replace(f"part-{part:05d}", f"part-{part:05d}.{version}", 1)

    def open_parts(self, files: dict[str, int]) -> list[tuple[np.ndarray, Any]]:
        """Each part's (tokens memmap, aux arrays), from local files: in place, or staged
        copies, downloaded on first read (the whole entry, under the staging bound)."""
        parts = range(self.entry.parts)

        def load(npy: Path, aux: Path) -> tuple[np.ndarray, Any]:
            return np.load(npy, mmap_mode="r"), np.load(aux)

        if not self.remote:
            return [load(self.entry.path(p, ".npy"), self.entry.path(p, ".aux.npz"))
                    for p in parts]
        names = [(_name(p, ".npy"), _name(p, ".aux.npz")) for p in parts]
        self.stage.check(sum(files[n] for pair in names for n in pair),
                         f"reading entry {self.entry.name} ({self.entry.parts} parts)",
                         " (a reader stages the whole entry)")
        dones = [self.read(_name(p, ".done")) for p in parts]
        targets = [[self.local / self._staged(p, n, dones[p]) for n in names[p]] for p in parts]
        flat = [t for pair in targets for t in pair]
        with self.stage.locked():
            todo = [(n, t) for pair, tpair in zip(names, targets, strict=True)
                    for n, t in zip(pair, tpair, strict=True) if not t.exists()]
            if todo:
                self.stage.make_room(sum(files[n] for n, _ in todo), keep=flat)
                self.local.mkdir(parents=True, exist_ok=True)
            for name, target in todo:
                self._download(name, target, files[name])
            self.stage.touch(flat)
            return [load(*tpair) for tpair in targets]

    def _download(self, name: str, target: Path, size: int) -> None:
        def copy(f: Any) -> None:
            with self.fs.open_input_stream(self._key(name), compression=None) as src:
                while chunk := src.read(1 << 24):
                    f.write(chunk)

        with self.reaching(f"reading {name}"):
            _write_atomic(target, copy, size)
        if target.stat().st_size != size:
            target.unlink()
            raise CacheError(f"feature cache at cache_path={self.cache_path!r}: {name} of "
                             f"entry {self.entry.name} changed while it was read; read again")


class _Stream:
    """Only ``write``: numpy then writes an array in chunks through Python's file object
    (whose OSError keeps its errno) instead of ``ndarray.tofile`` (whose error does not)."""

    def __init__(self, f: Any) -> None:
        self.write = f.write


def _write_atomic(path: Path, write: Any, need: int) -> None:
    """``write(file)`` into a temporary name beside ``path``, then rename it to ``path``. On
    any failure the temporary file is removed; running out of space raises NoSpaceError
    (``need`` bytes, or what the write got to before failing when more, against the free
    space then)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{time.monotonic_ns()}{path.suffix}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        written = tmp.stat().st_size if tmp.exists() else 0
        err = no_space_error(exc, path.parent, max(need, written))
        tmp.unlink(missing_ok=True)
        if err is not None and err is not exc:
            raise err from exc
        raise


class _FixedDraw(Dataset):
    """Row i, draw v of a dataset whose items are random: torch's RNG (which every sampler and
    augmentation of ``vidablate.data`` draws from) is seeded from (seed, row, draw)."""

    def __init__(self, ds: Dataset, rows: Iterable[int], seed: int | None, draw: int) -> None:
        self.ds, self.rows, self.seed, self.draw = ds, list(rows), seed, draw

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        if self.seed is not None:
            torch.manual_seed(int(np.random.SeedSequence([self.seed, row, self.draw, 0xCAC4E])
                                  .generate_state(1, np.uint64)[0] >> np.uint64(1)))
        return self.ds[row]


@torch.no_grad()
def compute_tokens(frame_encoder: torch.nn.Module, video: torch.Tensor, select: str,
                   autocast: bool = False) -> torch.Tensor:
    """The cached value of clips: video [B, T, 3, H, W] -> tokens [B, T, L, W] after the frozen
    prefix (all tokens, or CLS (+ patches) when the whole tower is frozen)."""
    b, t = video.shape[:2]
    with torch.autocast(video.device.type, dtype=torch.bfloat16, enabled=autocast):
        tokens = frame_encoder.prefix(video.flatten(0, 1))
    if select == "cls":
        tokens = tokens[:, :1]
    elif select == "cls+patches":
        gh, gw = frame_encoder.grid
        tokens = tokens[:, : 1 + gh * gw]
    return tokens.float().reshape(b, t, *tokens.shape[1:])


def build_part(entry: Entry, dataset: Dataset, frame_encoder: torch.nn.Module, part: int,
               device: torch.device, autocast: bool = False, batch_size: int = 16,
               workers: int = 0) -> None:
    """Compute and write one part of an entry (atomically; ``.done`` last). The free space
    is checked before computing and again before writing (NoSpaceError); a failed write
    leaves none of the part's files behind (on an object store: no ``.done``, and no local
    file in the staging folder)."""
    store = _Store(entry)
    store.room(entry.part_bytes(part), part)
    start, stop = entry.part_range(part)
    n = stop - start
    select = entry.payload["select"]
    out = np.zeros((n, entry.views, entry.frames, entry.tokens, entry.width),
                   dtype=DTYPES[entry.dtype])
    labels = np.zeros(n, dtype=np.int64)
    valid = np.ones((n, entry.views), dtype=bool)
    imu: np.ndarray | None = None
    frame_encoder.eval()
    seed = entry.payload.get("draw_seed")
    draws = entry.views if entry.train else 1
    for draw in range(draws):
        rows = _FixedDraw(dataset, range(start, stop), seed if entry.train else None, draw)
        loader = DataLoader(rows, batch_size=batch_size, num_workers=workers)
        at = 0
        for batch in loader:
            video = batch["video"].to(device)
            b = video.shape[0]
            lead = video.shape[:2] if not entry.train and entry.views > 1 else video.shape[:1]
            clips = video.reshape(-1, *video.shape[len(lead):])
            tokens = compute_tokens(frame_encoder, clips, select, autocast).cpu()
            tokens = tokens.reshape(b, -1, *tokens.shape[1:]).numpy()
            sl = slice(at, at + b)
            if entry.train:
                out[sl, draw] = tokens[:, 0]
            else:
                out[sl] = tokens
            labels[sl] = batch["label"].numpy()
            v = batch.get("valid")
            if v is not None:
                ok = torch.as_tensor(v).bool().numpy()
                if entry.train:
                    valid[sl, draw] = ok
                else:
                    valid[sl] = ok[:, None]
            if "imu" in batch:
                cut = batch["imu"].numpy()
                cut = cut.reshape(b, -1, *cut.shape[-2:])
                if imu is None:
                    imu = np.zeros((n, entry.views, *cut.shape[-2:]), dtype=np.float32)
                if entry.train:
                    imu[sl, draw] = cut[:, 0]
                else:
                    imu[sl] = cut
            at += b
    aux = {"labels": labels, "valid": valid}
    if imu is not None:
        aux["imu"] = imu
    need = out.nbytes + sum(a.nbytes for a in aux.values()) + WRITE_MARGIN
    store.room(need, part)
    store.unpublish(part)  # the part is incomplete until its new .done
    folder = store.build_folder()
    files = [folder / _name(part, s) for s in (".done", ".npy", ".aux.npz")]
    try:
        _write_atomic(files[1], lambda f: np.lib.format.write_array(_Stream(f), out), need)
        _write_atomic(files[2], lambda f: np.savez(f, **aux), need)
        store.publish(part, files[1:], json.dumps({"rows": n,
                                                   "build": uuid.uuid4().hex}).encode())
    except BaseException:
        for path in files:
            path.unlink(missing_ok=True)
        raise
    finally:
        if folder != store.local:  # the staging build folder: empty now, or a failure's
            shutil.rmtree(folder, ignore_errors=True)


def dataset_of(data: Any, name: str) -> Dataset:
    """The dataset a plan's entry named ``name`` was made from."""
    if name == "train":
        return data.train
    for s in data.evals:
        if s.name == name:
            return s.dataset
    raise CacheError(f"no dataset {name!r} in this protocol")


def build_local(plan_: CachePlan, data: Any, frame_encoder: torch.nn.Module,
                device: torch.device, autocast: bool, batch_size: int = 16, workers: int = 0,
                log: Any = print) -> int:
    """Build the missing parts of a plan's entries in this process; returns parts built."""
    built = 0
    for entry in plan_.entries.values():
        todo = prepare(entry)
        if todo:
            log(f"feature cache: building {entry.name} ({entry.key}, {len(todo)} part(s))")
        for part in todo:
            build_part(entry, dataset_of(data, entry.name), frame_encoder, part, device,
                       autocast, batch_size, workers)
            built += 1
    return built


class CachedClips(Dataset):
    """Items of a cache entry in place of decoded clips: ``{"tokens", "label", "index",
    "valid"}`` (+ ``"imu"``). Training items hold one draw [T, L, W] (draw = epoch mod V, set
    by ``set_epoch``); evaluation items [V, T, L, W] when V > 1 views, else [T, L, W]."""

    def __init__(self, entry: Entry) -> None:
        store = _Store(entry)
        status, todo, files = _state(store)
        if status != "complete":
            raise CacheError(f"feature cache entry {entry.name} at {_redact(entry.root)} is "
                             f"{status} ({len(todo)} of {entry.parts} parts to build)")
        self.entry = entry
        self.draw = 0
        opened = store.open_parts(files)
        self._tokens = [tokens for tokens, _ in opened]
        aux = [a for _, a in opened]
        self.labels = np.concatenate([a["labels"] for a in aux])
        self.valid = np.concatenate([a["valid"] for a in aux])
        self.imu = np.concatenate([a["imu"] for a in aux]) if "imu" in aux[0] else None

    def __len__(self) -> int:
        return self.entry.rows

    def set_epoch(self, epoch: int) -> None:
        self.draw = epoch % self.entry.views if self.entry.train else 0

    def __getitem__(self, idx: int) -> dict[str, Any]:
        part, off = divmod(idx, self.entry.part_rows)
        arr = self._tokens[part]
        one = self.entry.train or self.entry.views == 1
        v = self.draw if self.entry.train else 0
        tokens = np.array(arr[off, v] if one else arr[off])
        item: dict[str, Any] = {
            "tokens": torch.from_numpy(tokens).float(),
            "label": torch.tensor(int(self.labels[idx]), dtype=torch.int64), "index": idx,
            "valid": bool(self.valid[idx, v] if one else self.valid[idx].all())}
        if self.imu is not None:
            item["imu"] = torch.from_numpy(np.array(self.imu[idx, v] if one else self.imu[idx]))
        return item


def wrap(data: Any, plan_: CachePlan) -> Any:
    """ProtocolData whose datasets read the plan's (complete) entries."""
    train = CachedClips(plan_.entries["train"]) if "train" in plan_.entries else data.train
    evals = [dataclasses.replace(s, dataset=CachedClips(plan_.entries[s.name]))
             for s in data.evals]
    return dataclasses.replace(data, train=train, evals=evals)
