"""The sweep driver's side of the feature cache and of trial packing: decide per trial whether
it reads the cache (and say why not), build every missing entry once as a Ray job that fans
out over the cluster, and size each trial's resource request so that light trials share a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray.util import ActorPool

from ..config import ExperimentConfig
from ..data import cache
from ..data.protocols import build_protocol
from ..errors import ConfigError
from ..model import build_model
from ..train.loop import loader_workers, seed_everything
from .space import TrialSpec


@dataclass
class TrialCache:
    """A trial's plan plus what the runner needs from it."""

    plan: cache.CachePlan
    packed: bool
    """Reads only CLS (+ patch) features and trains light modules: asks for a GPU fraction."""
    clips: dict[str, int] = field(default_factory=dict)
    """Clips per dataset of the trial (``train`` and each evaluation set)."""


def cache_root(path: str | None, storage: str) -> str:
    """``cache_path`` or ``<storage>/feature_cache`` (the sweep storage is shared by nodes;
    under an ``s3://`` storage the cache is on the object store, staged to each node's disk
    as ``vidablate.data.cache`` describes)."""
    return path or f"{storage.rstrip('/')}/feature_cache"


def plan_trials(trials: list[TrialSpec], root: str, mode: str, random_weights: bool = False
                ) -> dict[str, TrialCache]:
    """Each trial's cache plan, computed on the driver by building its data and model the way
    the trial will (same seed, so random weights hash the same). Distinct models and datasets
    are built once. ``random_weights`` (the dry run) builds them without their pretrained
    weights: the decisions and sizes are the same, the entry keys are not the run's."""
    models: dict[str, Any] = {}
    datas: dict[str, Any] = {}
    out: dict[str, TrialCache] = {}
    for t in trials:
        cfg = ExperimentConfig.from_dict(t.experiment).validate()
        model_key = json.dumps([t.experiment["model"], cfg.data.num_frames,
                                cfg.trainer.seed if not cfg.model.pretrained else None],
                               sort_keys=True)
        data_key = json.dumps([t.experiment["data"], t.experiment["eval"], cfg.trainer.seed,
                               cfg.trainer.epochs > 0, cfg.model.uses_imu], sort_keys=True)
        if data_key not in datas:
            seed_everything(cfg.trainer.seed)
            datas[data_key] = build_protocol(cfg)
        data = datas[data_key]
        if mode in (False, "off"):  # no model to build (it may mean loading real weights)
            p = cache.CachePlan(False, "cache=off")
        else:
            if model_key not in models:
                seed_everything(cfg.trainer.seed)  # the loop seeds before building its model
                model_cfg = dataclasses.replace(cfg.model, pretrained=None) \
                    if random_weights else cfg.model  # a dry run downloads no weights
                models[model_key] = build_model(model_cfg, cfg.data.num_frames)
            try:
                p = cache.plan(cfg, models[model_key], data, root, mode)
            except cache.CacheError as err:
                raise ConfigError(str(err)) from None
        if mode == "require" and not p.use:
            raise ConfigError(f"cache=require, but trial {t.key} cannot read the feature "
                              f"cache: {p.reason}")
        clips = {s.name: len(s.dataset) for s in data.evals}
        if data.train is not None and cfg.trainer.epochs > 0:
            clips["train"] = len(data.train)
        out[t.key] = TrialCache(p, p.use and p.whole_tower, clips)
    return out


def worker_resources(trainer: dict[str, Any], packed: bool) -> dict[str, float]:
    """Resources of one Ray Train worker: ``trainer.cpus_per_worker`` CPUs and, on GPU, a whole
    GPU, or ``trainer.packed_gpu_fraction`` of one for a packed (cached, light) trial."""
    res: dict[str, float] = {"CPU": float(trainer["cpus_per_worker"])}
    if trainer["use_gpu"]:
        res["GPU"] = float(trainer["packed_gpu_fraction"]) if packed else 1.0
    return res


def trial_resources(trainer: dict[str, Any], packed: bool) -> dict[str, float]:
    """The whole trial's request (all its workers)."""
    workers = max(int(trainer["num_workers"]), 1)
    return {k: v * workers for k, v in worker_resources(trainer, packed).items()}


def concurrency(trials: list[TrialSpec], packed: dict[str, bool],
                cluster: dict[str, float], count: int | None = None) -> int:
    """Trials that can run at once on ``cluster``: as many as the lightest trial's request
    fits (Ray's scheduler holds heavier ones back until their resources are free), at most
    ``count`` (default: as many as ``trials``; an HPO space's samples share one template)."""
    best = 1
    for t in trials:
        need = trial_resources(t.experiment["trainer"], packed.get(t.key, False))
        fit = min(int(cluster.get(k, 0) // v + 1e-9) for k, v in need.items() if v > 0)
        best = max(best, fit)
    return max(1, min(best, len(trials) if count is None else count))


def entries_to_build(plans: dict[str, TrialCache], trials: list[TrialSpec]
                     ) -> list[tuple[cache.Entry, dict[str, Any]]]:
    """Distinct entries of all trials (with one experiment that can rebuild each)."""
    by_key = {t.key: t for t in trials}
    seen: dict[str, tuple[cache.Entry, dict[str, Any]]] = {}
    for key, tc in plans.items():
        for entry in tc.plan.entries.values():
            seen.setdefault(entry.key, (entry, by_key[key].experiment))
    return list(seen.values())


def build_entries(plans: dict[str, TrialCache], trials: list[TrialSpec],
                  max_workers: int = 0, log: Any = print) -> dict[str, int]:
    """Build every missing part of the trials' entries as Ray tasks on actors that each load
    the frozen prefix once; complete entries are reused. Returns counts for the log."""
    jobs: list[tuple[dict[str, Any], dict[str, Any], int]] = []
    counts = {"entries": 0, "reused": 0, "parts": 0}
    total_bytes = 0
    for entry, experiment in entries_to_build(plans, trials):
        counts["entries"] += 1
        total_bytes += entry.bytes
        todo = cache.prepare(entry)
        if not todo:
            counts["reused"] += 1
        jobs += [(entry.to_dict(), experiment, part) for part in todo]
    counts["parts"] = len(jobs)
    if not counts["entries"]:
        return counts
    log(f"feature cache: {counts['entries']} entries ({total_bytes / 2**20:.1f} MiB), "
        f"{counts['reused']} complete, {len(jobs)} part(s) to build")
    if not jobs:
        return counts
    trainer = jobs[0][1]["trainer"]
    res = {"num_cpus": trainer["cpus_per_worker"], "num_gpus": 1 if trainer["use_gpu"] else 0}
    cluster = ray.cluster_resources()
    room = int(cluster.get("GPU", 0)) if trainer["use_gpu"] else int(
        cluster.get("CPU", 1) // max(trainer["cpus_per_worker"], 1))
    n = max(1, min(len(jobs), room, max_workers or len(jobs)))
    started = time.time()
    actors = [CacheBuilder.options(**res).remote() for _ in range(n)]
    pool = ActorPool(actors)
    for done, (entry, part) in enumerate(pool.map_unordered(
            lambda a, job: a.build.remote(*job), jobs), start=1):
        if done == len(jobs) or done % max(1, len(jobs) // 10) == 0:
            log(f"feature cache: {done}/{len(jobs)} parts ({entry} part {part})")
    for a in actors:
        ray.kill(a)
    log(f"feature cache: built {len(jobs)} part(s) on {n} worker(s) in "
        f"{time.time() - started:.1f} s")
    return counts


def _builder_class() -> Any:
    @ray.remote
    class _CacheBuilder:
        """One cache-building worker: keeps the trial's data and frozen prefix between parts."""

        def __init__(self) -> None:
            self._loaded: dict[str, Any] = {}

        def build(self, entry: dict[str, Any], experiment: dict[str, Any], part: int
                  ) -> tuple[str, int]:
            cfg = ExperimentConfig.from_dict(experiment).validate()
            key = json.dumps(experiment, sort_keys=True)
            if key not in self._loaded:
                self._loaded.clear()
                device = torch.device("cuda" if cfg.trainer.use_gpu else "cpu")
                if device.type == "cpu":
                    torch.set_num_threads(max(cfg.trainer.cpus_per_worker, 1))
                seed_everything(cfg.trainer.seed)
                model = build_model(cfg.model, cfg.data.num_frames)
                seed_everything(cfg.trainer.seed)
                self._loaded[key] = (build_protocol(cfg), model.frame_encoder.to(device),
                                     device)
            data, fe, device = self._loaded[key]
            e = cache.Entry(**entry)
            autocast = cfg.trainer.use_gpu and cfg.trainer.amp
            cache.build_part(e, cache.dataset_of(data, e.name), fe, part, device, autocast,
                             cfg.trainer.eval_batch_size, loader_workers(cfg))
            return f"{e.name} {e.key[:8]}", part

    return _CacheBuilder


class _Lazy:
    """``CacheBuilder.options(...)``: the Ray actor class is made on first use, not when this
    module loads (a driver that never builds the cache never defines it)."""

    _cls: Any = None

    def options(self, **kw: Any) -> Any:
        if _Lazy._cls is None:
            _Lazy._cls = _builder_class()
        return _Lazy._cls.options(**kw)


CacheBuilder = _Lazy()


def describe_plan(tc: TrialCache, trainer: dict[str, Any]) -> str:
    """One dry-run/launch line: cache on/off and why, and the resources asked for."""
    res = trial_resources(trainer, tc.packed)
    ask = ", ".join(f"{v:g} {k}" for k, v in res.items())
    return f"cache {tc.plan.line()}; asks {ask}"


def ensure_folder(root: str) -> None:
    """The cache folder must be creatable (checked before any trial starts). An ``s3://`` root
    is probed by the pre-flight instead (``preflight.check_object_store``: an explicit
    cache_path, or the storage_path a derived root lies under)."""
    if "://" in root:
        return
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cache_path={root!r}: {err}; pass cache_path=<a writable folder "
                          f"shared by all nodes> or cache=off") from None
