"""Training step throughput and model FLOPs utilisation (MFU) of ViT-B-16, 8 x 224^2.

Two modes, built through the project (``ExperimentConfig`` -> ``build_model``, the optimizers
of ``vidablate.train.loop``, and the loop's own step ``vidablate.train.step.train_step``),
random weights:
- ``full``: full fine-tuning (all 12 visual blocks + projection trainable), CLIP-mean;
- ``frozen``: frozen backbone + MotionPrompt's MMB pool (``trainable_blocks=0``).
bf16 autocast, SDPA attention, optional ``--compile`` and ``--activation-checkpointing``.

The peak is measured first: the best of several dense bf16 GEMMs (8192^3) on this device.
FLOPs of one training step (forward + backward, optimizer excluded: the same ``train_step``
called with no optimizers, on the uncompiled model) are counted with
``vidablate.sweep.cost.counting_flops`` (FlopCounterMode with every attention matmul counted); MFU = counted FLOPs / step time / measured peak.
Only the timed region synchronises the device.

    python benchmarks/gpu_step.py [--batch 32] [--compile] [--json out.json]
    python benchmarks/gpu_step.py --smoke     # CPU, tiny CLIP, 32 px, fp32: the same code path
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from vidablate.config import ExperimentConfig  # noqa: E402
from vidablate.model import build_model  # noqa: E402
from vidablate.sweep.cost import counting_flops  # noqa: E402
from vidablate.train.loop import make_optimizers, seed_everything  # noqa: E402
from vidablate.train.step import train_step  # noqa: E402

MODES = {
    "full": {"trainable_blocks": 99, "train_visual_proj": True, "distill": False},
    "frozen": {"trainable_blocks": 0, "train_visual_proj": False, "distill": False, "mmb": True},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Best dense GEMM throughput (FLOP/s) of n x n x n products on this device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def run_mode(mode: str, backbone: str, size: int, frames: int, batch: int, steps: int,
             device: torch.device, bf16: bool, compile_: bool, ckpt: bool, classes: int
             ) -> dict[str, float | str]:
    model_cfg = {"backbone": backbone, "pretrained": None, **MODES[mode]}
    cfg = ExperimentConfig.from_dict({
        "model": model_cfg, "data": {"num_frames": frames, "image_size": size,
                                     "protocol": "closed_set"},
        "trainer": {"visual_optimizer": "adamw", "new_optimizer": "adamw"}})
    seed_everything(0)
    model = build_model(cfg.model, frames).to(device)
    model.frame_encoder.set_activation_checkpointing(ckpt)
    optimizers, _ = make_optimizers(model, cfg.trainer)
    step_model = torch.compile(model) if compile_ else model
    video = torch.randn(batch, frames, 3, size, size, device=device)
    target = torch.randint(0, classes, (batch,), device=device)
    names = [f"action number {i}" for i in range(classes)]

    def step() -> None:  # the training loop's step (vidablate.train.step)
        train_step(step_model, model, optimizers, video, None, names, target, device=device,
                   autocast=bf16)

    model.train()
    step()  # warm-up: class text features, compilation, allocator
    with counting_flops() as counter:  # the same step, optimizer excluded
        train_step(model, model, {}, video, None, names, target, device=device, autocast=bf16)
    flops = counter.get_total_flops()
    step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    trainable = sum(p.numel() for g in model.param_groups().values() for p in g)
    return {"mode": mode, "batch": batch, "step_ms": 1000 * seconds,
            "clips_per_s": batch / seconds, "step_tflop": flops / 1e12,
            "achieved_tflops": flops / seconds / 1e12, "trainable_m": trainable / 1e6,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30
            if device.type == "cuda" else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, vidablate-tiny, 32 px, fp32")
    ap.add_argument("--modes", nargs="*", default=list(MODES))
    ap.add_argument("--batch", type=int, default=0, help="default 32 (GPU) / 4 (smoke)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps; default 20 / 3")
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.smoke:
        device, bf16, backbone, size = torch.device("cpu"), False, "vidablate-tiny", 32
        peak_dtype, peak_n = torch.float32, 1024
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run on a GPU machine, or --smoke for the CPU code path")
        device, bf16, backbone, size = torch.device("cuda"), True, "ViT-B-16", 224
        peak_dtype, peak_n = torch.bfloat16, 8192
        torch.backends.cuda.matmul.allow_tf32 = True
    batch = args.batch or (4 if args.smoke else 32)
    steps = args.steps or (3 if args.smoke else 20)
    peak = matmul_peak(device, peak_dtype, peak_n)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device {name}; measured {str(peak_dtype).split('.')[-1]} matmul peak "
          f"{peak / 1e12:.2f} TFLOP/s ({peak_n}^3)")
    rows = []
    for mode in args.modes:
        r = run_mode(mode, backbone, size, 8, batch, steps, device, bf16, args.compile,
                     args.activation_checkpointing, args.classes)
        r["mfu"] = r["achieved_tflops"] * 1e12 / peak
        rows.append(r)
    print(f"\n{backbone}, 8x{size}^2, {'bf16 autocast' if bf16 else 'fp32'}"
          f"{', compiled' if args.compile else ''}"
          f"{', activation checkpointing' if args.activation_checkpointing else ''}")
    print("| mode | trainable M | batch | step ms | clips/s | TFLOP/step | TFLOP/s | MFU | "
          "peak mem GiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['trainable_m']:.1f} | {r['batch']} | {r['step_ms']:.1f} | "
              f"{r['clips_per_s']:.1f} | {r['step_tflop']:.3f} | {r['achieved_tflops']:.2f} | "
              f"{100 * r['mfu']:.1f}% | {r['peak_mem_gib']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "peak_tflops": peak / 1e12,
                                         "results": rows}, indent=1))


if __name__ == "__main__":
    main()
