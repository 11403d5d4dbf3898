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
block 1 such as OmniCLIP's SPG/TE), no pixel mixing (MixUp/CutMix), and a filesystem path to
store it. The inputs must be deterministic for a given view: evaluation views are; a training
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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import ensure_space, no_space_error
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
        return Path(self.root) / f"part-{part:05d}{suffix}"

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
    if "://" in root:
        return CachePlan(False, f"the cache needs a filesystem path (local or shared), not "
                                f"{root!r}; pass cache_path=<shared folder>")
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
        entries[name] = Entry(name, key, str(Path(root) / key), payload, len(ds), v, train,
                              cfg.data.num_frames, tokens, width, cfg.data.cache_dtype,
                              cfg.data.cache_part_rows)
    what = (f"visual blocks 1-{fe.split} of {depth} frozen" if fe.split < depth
            else "whole visual tower frozen")
    draws = f", {views} fixed training draws" if views > 1 else ""
    return CachePlan(True, f"{what}, {select} tokens{draws}", entries, select != "all")


def state(entry: Entry) -> tuple[str, list[int]]:
    """(``complete`` | ``partial`` | ``stale`` | ``missing``, parts to build)."""
    root = Path(entry.root)
    meta = root / "meta.json"
    if not meta.is_file():
        return "missing", list(range(entry.parts))
    try:
        saved = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return "stale", list(range(entry.parts))
    if saved.get("payload") != _jsonable(entry.payload) or saved.get("rows") != entry.rows:
        return "stale", list(range(entry.parts))
    todo = [p for p in range(entry.parts) if not _part_ok(entry, p)]
    return ("complete" if not todo else "partial"), todo


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _part_ok(entry: Entry, part: int) -> bool:
    done = entry.path(part, ".done")
    if not done.is_file():
        return False
    start, stop = entry.part_range(part)
    shape = (stop - start, entry.views, entry.frames, entry.tokens, entry.width)
    try:
        arr = np.load(entry.path(part, ".npy"), mmap_mode="r")
    except (OSError, ValueError):
        return False
    return tuple(arr.shape) == shape and arr.dtype == DTYPES[entry.dtype]


def prepare(entry: Entry) -> list[int]:
    """Make the entry's folder consistent before building: a stale entry is wiped, the meta
    file written; returns the parts still to build."""
    status, todo = state(entry)
    root = Path(entry.root)
    if status == "complete":
        return []
    if status == "stale":
        for p in root.glob("part-*"):
            p.unlink()
    ensure_space(root, sum(entry.part_bytes(p) for p in todo))
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write(root / "meta.json", json.dumps(
        {"payload": _jsonable(entry.payload), "rows": entry.rows, "views": entry.views,
         "shape": [entry.frames, entry.tokens, entry.width], "dtype": entry.dtype,
         "part_rows": entry.part_rows}, indent=1).encode())
    return todo


def _atomic_write(path: Path, blob: bytes) -> None:
    _write_atomic(path, lambda f: f.write(blob), len(blob) + WRITE_MARGIN)


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
    leaves none of the part's files behind."""
    ensure_space(entry.root, entry.part_bytes(part))
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
    ensure_space(entry.root, need)
    files = [entry.path(part, s) for s in (".done", ".npy", ".aux.npz")]
    files[0].unlink(missing_ok=True)  # the part is incomplete until its new .done
    try:
        _write_atomic(files[1], lambda f: np.lib.format.write_array(_Stream(f), out), need)
        _write_atomic(files[2], lambda f: np.savez(f, **aux), need)
        _atomic_write(files[0], json.dumps({"rows": n}).encode())
    except BaseException:
        for path in files:
            path.unlink(missing_ok=True)
        raise


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
        status, todo = state(entry)
        if status != "complete":
            raise CacheError(f"feature cache entry {entry.name} at {entry.root} is {status} "
                             f"({len(todo)} of {entry.parts} parts to build)")
        self.entry = entry
        self.draw = 0
        self._tokens = [np.load(entry.path(p, ".npy"), mmap_mode="r")
                        for p in range(entry.parts)]
        aux = [np.load(entry.path(p, ".aux.npz")) for p in range(entry.parts)]
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
