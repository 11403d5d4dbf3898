"""The dry run of a sweep (``describe``): the trials a space expands to and their cost, trials x
epochs x clips, each configuration's parameters and forward GFLOPs (``model_cost``), and
device-hours with and without the feature cache from per-clip step costs measured here (on the
GPU when the trials use one and this machine has it, else on this CPU). Video decoding is not
included; see ``benchmarks/loader.py`` for what decoding costs and ``benchmarks/README.md`` for
how many decode processes a GPU needs."""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace
from typing import Any

import pyarrow.parquet as pq
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from ..config import ExperimentConfig
from ..data import cache
from ..data.protocols import train_class_names
from ..model import build_model
from ..train.loop import make_optimizers, seed_everything
from ..train.step import train_step
from .caching import TrialCache, describe_plan
from .space import Space, TrialSpec
from .timing import STARTUP_S, SWEEP_START_S, TRIAL_START_S, Timings


@dataclass
class StepCost:
    """Seconds per clip (one view) of one configuration on one device."""

    train: float
    """Training step from pixels: frozen prefix + tail + modules, forward and backward."""
    eval: float
    """Evaluation forward from pixels."""
    train_cached: float
    """Training step from cached prefix tokens."""
    eval_cached: float
    build: float
    """Computing a clip's cache entry (the frozen prefix, forward only)."""
    device: str


def _timed(fn: Any, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` calls after a warm-up: the least disturbed by other load on
    the machine, so two dry runs agree."""
    fn()  # warm-up (text features, allocator)
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def measure(experiment: dict[str, Any], tc: TrialCache, batch: int = 2, repeats: int = 2,
            classes: int | None = None) -> StepCost:
    """Time one configuration's steps with random weights and inputs at its real shapes and
    the trial's class names (``classes`` overrides how many are scored, repeating them)."""
    unseeded = [{k: v for k, v in experiment[part].items() if k != "seed"}
                for part in ("model", "data", "trainer")]
    blob = json.dumps([*unseeded, tc.plan.use, batch, repeats, classes], sort_keys=True,
                      default=str)
    if blob in _MEASURED:  # a multirun of dry runs measures each configuration once
        return _MEASURED[blob]
    cfg = ExperimentConfig.from_dict(experiment)
    use_gpu = cfg.trainer.use_gpu and torch.cuda.is_available()
    threads = torch.get_num_threads()
    if not use_gpu:  # a Ray worker runs torch on the CPUs it asked for (OMP_NUM_THREADS)
        torch.set_num_threads(max(int(cfg.trainer.cpus_per_worker), 1))
    try:
        _MEASURED[blob] = _measure(cfg, tc, batch, repeats, classes, use_gpu)
        return _MEASURED[blob]
    finally:
        torch.set_num_threads(threads)


_MEASURED: dict[str, StepCost] = {}
"""Configuration -> its measured step costs, for this process."""


def _measure(cfg: ExperimentConfig, tc: TrialCache, batch: int, repeats: int,
             classes: int | None, use_gpu: bool) -> StepCost:
    device = torch.device("cuda" if use_gpu else "cpu")
    autocast = use_gpu and cfg.trainer.amp
    seed_everything(0)
    model = build_model(dataclasses_replace(cfg.model, pretrained=None),
                        cfg.data.num_frames).to(device)
    d = cfg.data
    size = model.frame_encoder.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    video = torch.randn(batch, d.num_frames, 3, size, size, device=device)
    imu = torch.randn(batch, 6, d.num_frames * d.imu_rate, device=device)
    real = train_class_names(cfg)  # a prompt file (STDD) covers these names, not placeholders
    names = [real[i % len(real)] for i in range(classes or len(real))]
    target = torch.zeros(batch, dtype=torch.long, device=device)
    optimizers, _ = make_optimizers(model, cfg.trainer) if cfg.trainer.epochs else ({}, {})
    select = cache.token_selection(model.frame_encoder)[0]
    tokens = cache.compute_tokens(model.frame_encoder, video, select, autocast)

    def step(cached: bool) -> None:
        model.train()
        train_step(model, model, optimizers, tokens if cached else video, imu, names, target,
                   device=device, cached=cached, autocast=autocast)

    @torch.no_grad()
    def forward(cached: bool) -> None:
        model.eval()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            model(None if cached else video, imu, names, tokens if cached else None)

    per = 1.0 / batch
    train = _timed(lambda: step(False), device, repeats) * per if optimizers else 0.0
    train_c = _timed(lambda: step(True), device, repeats) * per \
        if optimizers and tc.plan.use else train
    ev = _timed(lambda: forward(False), device, repeats) * per
    ev_c = _timed(lambda: forward(True), device, repeats) * per if tc.plan.use else ev
    build = _timed(lambda: cache.compute_tokens(model.frame_encoder, video, select, autocast),
                   device, repeats) * per
    return StepCost(train, ev, train_c, ev_c, build, device.type)


@dataclass
class TableCost:
    passes: int
    """Training clip passes (trials x epochs x clips)."""
    without: float
    """Seconds without the cache."""
    with_cache: float
    """Seconds with the cache, its building included."""
    build: float
    device: str
    trials: dict[str, float] = field(default_factory=dict)
    """Trial key -> seconds inside its training loop as it will run (from the cache when its
    plan reads it)."""


def table_cost(trials: list[TrialSpec], plans: dict[str, TrialCache],
               clips: dict[str, dict[str, int]], repeats: int = 2) -> TableCost:
    """Sum the measured per-clip costs over the trials' epochs, training clips and evaluation
    views; each distinct cache entry is built once."""
    costs: dict[str, StepCost] = {}
    without = with_cache = build = 0.0
    passes = 0
    built: set[str] = set()
    per_trial: dict[str, float] = {}
    device = "cpu"
    for t in trials:
        tc = plans[t.key]
        blob = repr((t.experiment["model"], t.experiment["data"]["num_frames"],
                     t.experiment["trainer"]["use_gpu"], tc.plan.use,
                     t.experiment["data"]["base_classes"], t.experiment["data"]["num_classes"]))
        if blob not in costs:
            costs[blob] = measure(t.experiment, tc, repeats=repeats)
            batch = min(int(t.experiment["trainer"]["batch_size"]), 16)
            if costs[blob].train * 2 < 0.1 and batch > 2:  # a light model: per-step costs
                costs[blob] = measure(t.experiment, tc, batch=batch, repeats=repeats)  # matter
        c = costs[blob]
        device = c.device
        tr, ev = t.experiment["trainer"], t.experiment["eval"]
        epochs = int(tr["epochs"])
        n_train = clips[t.key].get("train", 0)
        views = int(ev["temporal_views"]) * int(ev["spatial_crops"])
        n_eval = sum(n for name, n in clips[t.key].items() if name != "train") * views
        evals = max(1, epochs // max(int(tr["eval_every"]), 1)) if epochs else 1
        passes += epochs * n_train
        cost_off = epochs * n_train * c.train + evals * n_eval * c.eval
        without += cost_off
        if not tc.plan.use:
            with_cache += cost_off
            per_trial[t.key] = cost_off
            continue
        per_trial[t.key] = epochs * n_train * c.train_cached + evals * n_eval * c.eval_cached
        with_cache += per_trial[t.key]
        for entry in tc.plan.entries.values():
            if entry.key not in built:
                built.add(entry.key)
                build += entry.rows * entry.views * c.build
    return TableCost(passes, without, with_cache + build, build, device, per_trial)


def wall_estimate(tc: TableCost, concurrency: int, fixed: Timings | None) -> float:
    """Seconds of wall time of the whole command on this machine: its start-up, then the cache
    entries built (Ray tasks, ``concurrency`` at once), then each trial's loop time plus the
    fixed cost per trial, run ``concurrency`` at once (longest first into the first free slot,
    as Tune starts queued trials when one ends), with the fixed cost per sweep. ``fixed`` is
    what the last sweep on this storage measured (``sweep.timing``); None takes the defaults
    there."""
    per_trial = fixed.trial_start_s if fixed else TRIAL_START_S
    per_sweep = fixed.sweep_start_s if fixed else SWEEP_START_S
    startup = fixed.startup_s if fixed else STARTUP_S
    slots = [0.0] * max(concurrency, 1)
    for seconds in sorted(tc.trials.values(), reverse=True):
        heapq.heapreplace(slots, slots[0] + seconds + per_trial)
    return startup + per_sweep + tc.build / max(concurrency, 1) + max(slots)


def format_cost(tc: TableCost) -> str:
    where = "GPU" if tc.device == "cuda" else "CPU of this machine; a dry run on a GPU node " \
        "with trainer.use_gpu=true measures GPU-hours"
    ratio = tc.without / tc.with_cache if tc.with_cache > 0 else float("inf")
    return (f"  estimated device-hours ({where}; per-clip step costs measured now, decoding "
            f"not included): {tc.without / 3600:.3g} h without the feature cache, "
            f"{tc.with_cache / 3600:.3g} h with it, building included "
            f"({tc.build / 3600:.2g} h): {ratio:.1f}x cheaper")


def _train_clips(d: dict[str, Any]) -> int:
    """Training clips per epoch: k-shot x classes, the synthetic split, or the manifest's rows
    (all of them; base_novel trains on the base-class subset)."""
    classes = d["base_classes"] if d["protocol"] == "base_novel" else d["num_classes"]
    if d["k_shot"]:
        return d["k_shot"] * classes
    if d["dataset"] == "synthetic":
        return d["train_per_class"] * classes
    if not d["train_manifest"]:
        return 0
    try:
        return pq.read_metadata(d["train_manifest"]).num_rows
    except OSError:
        return 0


def recipe_line(space: Space, trials: list[TrialSpec]) -> str:
    """Which paper recipe the trials run (``conf/recipe/<name>.yaml``), and why not when not."""
    used = sorted({t.recipe for t in trials if t.recipe})
    n = sum(bool(t.recipe) for t in trials)
    if used:
        return f"  recipe: {', '.join(used)} on {n} of {len(trials)} trials (conf/recipe/)"
    if space.recipe:
        return (f"  recipe: none (the space's recipe {space.recipe} applies to real data; the "
                f"embedded synthetic default keeps its CPU budget; recipe={space.recipe} "
                f"forces it)")
    return "  recipe: none"


def describe(space: Space, trials: list[TrialSpec], cost: bool = True,
             plans: dict[str, TrialCache] | None = None, concurrency: int = 0,
             fixed: Timings | None = None) -> str:
    """Dry-run view: the trials a space expands to and their estimated cost (training clip
    passes; the model's trainable parameters and forward GFLOPs per view, measured by building
    each distinct configuration on CPU); with ``plans``, each trial's feature-cache decision
    and resource request, and device-hours with and without the cache (``table_cost``); with
    ``concurrency`` (trials at once), the table's wall time (``wall_estimate``) as one line
    ``estimate: <seconds> s wall on this machine (<cpu|gpu>)``."""
    if space.kind == "hpo":
        t = trials[0]
        clips = _train_clips(t.experiment["data"])
        epochs = t.experiment["trainer"]["epochs"]
        lines = [f"space {space.name}: Optuna TPE, {space.num_samples} trials maximising"
                 if space.objective["mode"] == "max" else
                 f"space {space.name}: Optuna TPE, {space.num_samples} trials minimising",
                 f"  objective {space.objective['metric']}; seed {t.seed}; "
                 f"{space.scheduler.describe(epochs)}"]
        for key, dim in space.search.items():
            lines.append(f"  {key:<28} {dim}")
        lines.append(f"  total: {space.num_samples * epochs * clips} training clip passes "
                     f"({space.num_samples} x {epochs} epochs x {clips} clips)"
                     + ("" if space.scheduler.type == "fifo" else
                        ", at most: early stopping ends most trials sooner"))
        if plans and t.key in plans:
            lines.append(f"  every trial: {describe_plan(plans[t.key], t.experiment['trainer'])}"
                         f" (sampled values that change the frozen prefix build their own "
                         f"entries)")
        lines.append(recipe_line(space, trials))
        return "\n".join(lines)
    lines = [f"space {space.name}: {len(space.rows)} rows x {len(trials) // len(space.rows)} "
             f"seeds = {len(trials)} trials", recipe_line(space, trials)]
    costs: dict[str, tuple[int, int, float]] = {}
    for t in trials:
        d, tr = t.experiment["data"], t.experiment["trainer"]
        clips = _train_clips(d)
        extra = ""
        if cost:
            blob = repr((t.experiment["model"], d["num_frames"], d["image_size"]))
            if blob not in costs:
                costs[blob] = model_cost(t.experiment)
            total_p, train_p, gflops = costs[blob]
            extra = (f", {train_p / 1e6:.2f}M/{total_p / 1e6:.2f}M trainable params, "
                     f"{gflops:.3f} GFLOPs/view")
        toggles = ", ".join(f"{k}={v}" for k, v in t.params.items() if k not in ("seed", "row"))
        lines.append(f"  {t.key:<24} {tr['epochs']} epochs x {clips} clips, "
                     f"{max(tr['num_workers'], 1)} worker(s){extra}, toggles {{{toggles}}}")
        if plans:
            lines.append(f"  {'':<24} {describe_plan(plans[t.key], tr)}")
    total = sum(t.experiment["trainer"]["epochs"] * _train_clips(t.experiment["data"])
                for t in trials)
    lines.append(f"  total: {total} training clip passes")
    if plans:
        on = sum(plans[t.key].plan.use for t in trials)
        lines.append(f"  feature cache: {on} of {len(trials)} trials read it")
        if cost:
            tc = table_cost(trials, plans, {k: v.clips for k, v in plans.items()})
            lines.append(format_cost(tc))
            if concurrency:
                wall = wall_estimate(tc, concurrency, fixed)
                source = (f"measured by sweep {fixed.sweep} on this storage" if fixed else
                          "no sweep has run on this storage yet: defaults from the "
                          "2-core development machine")
                per_trial = fixed.trial_start_s if fixed else TRIAL_START_S
                startup = fixed.startup_s if fixed else STARTUP_S
                lines.append(f"  wall time: {concurrency} trial(s) at once; start-up "
                             f"{startup:.0f} s, fixed cost {per_trial:.1f} s per trial "
                             f"({source}); decoding not included")
                lines.append(f"estimate: {wall:.0f} s wall on this machine "
                             f"({'gpu' if tc.device == 'cuda' else 'cpu'})")
    return "\n".join(lines)


def _sdpa(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
          **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _sdpa_backward(grad: Any, query: Any, key: Any, value: Any, *args: Any,
                   out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_backward_flop_count(grad, query, key, value)


ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
}
"""The fused attention kernels of the CPU that torch's FlopCounterMode has no formula for
(it counts them as zero), with its formulas for the GPU kernels: QK^T and A V forward; the
backward's four gradient matmuls and the recomputed QK^T."""


@contextlib.contextmanager
def counting_flops() -> Iterator[FlopCounterMode]:
    """torch's FlopCounterMode, counting every attention matmul: the CPU's fused SDPA kernels
    (``ATTENTION_FLOPS``) and nn.MultiheadAttention with its inference fast path (one fused
    kernel no formula covers) switched off while counting."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS) as counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def model_cost(experiment: dict[str, Any]) -> tuple[int, int, float]:
    """(total params, trainable params, forward GFLOPs of one view) of a trial's model, built
    on CPU with random weights and measured with torch's FlopCounterMode (cached class text
    features of a frozen text tower are not counted; text encoded per video is)."""
    cfg = ExperimentConfig.from_dict(experiment)
    model_cfg = dataclasses_replace(cfg.model, pretrained=None)
    model = build_model(model_cfg, cfg.data.num_frames).eval()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for group in model.param_groups().values() for p in group)
    size = model.frame_encoder.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    video = torch.zeros(1, cfg.data.num_frames, 3, int(size), int(size))
    imu = torch.zeros(1, 6, cfg.data.num_frames * cfg.data.imu_rate)
    names = train_class_names(cfg)[:32]
    with torch.no_grad():
        model(video, imu, names)  # warm-up: cached class text is encoded once, not per view
        with counting_flops() as counter:
            model(video, imu, names)
    return total, trainable, counter.get_total_flops() / 1e9
