"""Parameters and forward GFLOPs per view of each method at paper size, beside the papers' cost
figures (xclip Table 1, omniclip Tables 2-3, motionprompt Table 3).

Every method is the one VideoCLIP with that paper's toggles, built on ViT-B-16 at 224 px with
random weights (counts do not depend on the weights) and T=8 frames. FLOPs are counted with
torch's FlopCounterMode on CPU for one view (one clip of T frames), batch 1:

Models are measured in eval mode: the frozen distillation teacher (isclip, stdd) costs one more
forward of the tail it copies during training only, and its parameters are listed apart.

- ``video GFLOPs``: the video side with the class text features already cached (frozen text
  tower), i.e. what a view costs at inference once the text is encoded;
- ``+text``: what the text side adds per view when it depends on the video (MotionPrompt's
  MAP re-encodes every class prompt per video; X-CLIP's prompt generator attends to the video);
  measured with ``--classes`` classes (default 400, Kinetics-400).

Attention is counted in full (``vidablate.sweep.cost.counting_flops``: FlopCounterMode has no
formula for the CPU's fused SDPA kernel or nn.MultiheadAttention's fast path). torch counts a multiply-add as 2 FLOPs; fvcore (used by the X-CLIP and OmniCLIP papers) counts
it as 1, so their "GFLOPs" compare with our GMACs = GFLOPs / 2.

    python benchmarks/model_cost.py [--frames 8] [--classes 400] [--out results.json]
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

FROZEN = {"model.trainable_blocks": 0, "model.train_visual_proj": False, "model.distill": False}

METHODS: dict[str, dict] = {
    "CLIP-Mean (frozen)": {"toggles": {**FROZEN}, "paper": {}},
    "Fine-tuned CLIP (isclip)": {"toggles": {"model.distill": True}, "paper": {}},
    "IS-CLIP": {"toggles": {"model.sirm": True, "model.sgam": True, "model.distill": True},
                "paper": {}},
    "X-CLIP": {
        "toggles": {"model.cct": True, "model.mit": True, "model.video_prompt": True,
                    "model.trainable_blocks": 12, "model.distill": False},
        "paper": {"GFLOPs (fvcore) per view": 145, "source": "xclip Table 1, B/16 8f"}},
    "MotionPrompt": {
        "toggles": {**FROZEN, "model.mmb": True, "model.map": True, "model.mcb": True},
        "paper": {"params (M)": 143.9, "added params (M)": 4.2,
                  "GFLOPs K400 (400 classes)": 1135.793, "added GFLOPs K400": 0.034,
                  "source": "motionprompt Table 3"}},
    "STDD": {
        "toggles": {**FROZEN, "model.stca": True, "model.wsm": True, "model.mcm": True,
                    "model.stdd_adaptation": "prompt", "model.distill": True},
        "paper": {}},  # Eq. 8 alignment needs a prompt file for the classes: not counted here
    "OmniCLIP": {
        "toggles": {**FROZEN, "model.pta": True, "model.spg": True, "model.omni_temporal": True},
        "paper": {"GFLOPs (fvcore) per view": 130, "source": "omniclip Table 2 (K400), "
                  "128 on SSv2 (Table 3)"}},
}


def _names(count: int) -> list[str]:
    return [f"action number {i}" for i in range(count)]


def measure(toggles: dict, frames: int, classes: int) -> dict[str, float]:
    raw: dict = {"model": {"backbone": "ViT-B-16", "pretrained": None},
                 "data": {"num_frames": frames, "image_size": 224}}
    for key, value in toggles.items():
        section, field = key.split(".")
        raw.setdefault(section, {})[field] = value
    cfg = ExperimentConfig.from_dict(raw).validate()
    torch.manual_seed(0)
    model = build_model(cfg.model, frames).eval()
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    enc = model.frame_encoder
    teacher = {id(p): p for m in (enc.teacher, enc.teacher_visual) if m is not None
               for p in m.parameters()}
    teacher_params = sum(p.numel() for p in teacher.values())
    trainable = sum(p.numel() for g in model.param_groups().values() for p in g)
    video = torch.randn(1, frames, 3, 224, 224)
    imu = torch.randn(1, 6, frames * cfg.data.imu_rate)
    names = _names(classes)
    with torch.no_grad():
        model(video, imu, names)  # warm-up: fills the caches of a frozen text side
        with counting_flops() as video_only:
            out = model.encode_video(video, imu)
        with counting_flops() as text_side:
            model.logits_of(out, names)
    return {
        "params_M": (total - teacher_params) / 1e6,
        "teacher_params_M": teacher_params / 1e6,
        "trainable_M": trainable / 1e6,
        "video_GFLOPs": video_only.get_total_flops() / 1e9,
        "text_GFLOPs": text_side.get_total_flops() / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = {}
    for name in args.methods:
        start = time.time()
        rows[name] = {**measure(METHODS[name]["toggles"], args.frames, args.classes),
                      "paper": METHODS[name]["paper"]}
        print(f"measured {name} in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    base = rows.get("CLIP-Mean (frozen)")
    print(f"\nViT-B-16, 224 px, {args.frames} frames, {args.classes} classes, one view, batch 1\n")
    print("| method | params (M) | +teacher (M) | trainable (M) | video GFLOPs | video GMACs | "
          "x CLIP-Mean | +text GFLOPs | paper |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        ratio = r["video_GFLOPs"] / base["video_GFLOPs"] if base else float("nan")
        paper = "; ".join(f"{k}: {v}" for k, v in r["paper"].items()) or "-"
        print(f"| {name} | {r['params_M']:.1f} | {r['teacher_params_M']:.1f} | "
              f"{r['trainable_M']:.2f} | "
              f"{r['video_GFLOPs']:.1f} | {r['video_GFLOPs'] / 2:.1f} | {ratio:.3f} | "
              f"{r['text_GFLOPs']:.1f} | {paper} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
