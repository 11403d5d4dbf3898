"""Contrastive pretraining of the embedded default's tiny CLIP (DESIGN §4, "Embedded default").

With random text-tower weights novel-class accuracy is chance whatever the video side does, so
the embedded default needs a ``vidablate-tiny`` CLIP whose towers already share a space. This
module trains one for a fixed number of steps (``BUILD_STEPS`` from torch seed ``seed``, on one
CPU thread) on pairs made by the synthetic generator (``vidablate.data.synthetic``), following
the feasibility run of DESIGN §4 (a tiny open_clip CLIP on generated "a {colour} {shape} on the
{position}" pictures). A build is a pure function of the code and the seed: two builds in
different processes, whatever their torch thread settings, give bit-identical weights
(``tests/test_pretrain.py``). The seed-0 build ships in the package (``SHIPPED``, stored in
float16: 7 MB) and is the embedded default's ``model.pretrained=synthetic``; other seeds are
built on first use and cached.

* frame level: every frame of a clip with an appearance caption read from the generator's
  object track, "a [small|large] {colour} {shape} on the {position}." (position: left, right,
  top, bottom, their corners, or centre; size word only outside the static size range);
* clip level: the mean over frames of the per-frame image features (exactly how the CLIP-Mean
  baseline pools a video, ``VideoCLIP.encode_video``) with "a video of {class name}." (the
  downstream ``ModelConfig.prompt_template``) for all 32 class names, because motion words need
  clips, not frames (DESIGN §4).

The loss is CLIP's symmetric InfoNCE with the model's learnable ``logit_scale`` (open_clip's
``ClipLoss``), generalised to batches where several images share a caption: each distinct
caption in the batch is encoded once, image->text is cross-entropy over the batch's distinct
captions, text->image spreads the target uniformly over the images carrying that caption. With
all captions distinct it is exactly ``ClipLoss``.

Data seeds: downstream experiments use data seeds 0..99. Pretraining draws fresh clips from data
seeds ``10_000 + 1_000 * seed + k`` (k = 0, 1, ... one per generated chunk, k < 1000) and
``evaluate_zero_shot`` uses the test split of data seed ``9_000 + seed``, so (for seed < 1000)
no downstream clip and no evaluation clip is ever trained on. Caveat: the clip videos are
disjoint, but pretraining has seen every class *phrase*, including the phrases of the downstream
novel classes, just as web-scale CLIP has seen the concepts of the datasets it is later
evaluated on zero-shot. The downstream base/novel protocol therefore measures whether
fine-tuning on the base classes keeps that knowledge (IS-CLIP's motivation for distillation),
not whether a model can compose unseen words. Reversal pairs (moving left / moving right, ...)
contain the same frames in opposite order, so a frame-mean image encoder cannot tell them apart
by construction: at clip level their captions end up equally similar to the clip, the 32-way
accuracy is bounded by about half, and ``pair_acc`` (reversal confusions forgiven) is the
accuracy the pretraining can actually reach. ``text_cos_reversal`` reports how close the two
members' text features end up: the clip-level loss pulls them together (cosine 0.87 at random
init, 0.995 after the default run), and a frozen text tower must keep them apart for downstream
temporal modules to separate the pair.

Rebuild them with ``python jobs/pretrain_tiny_clip.py``; ``load_clip("vidablate-tiny",
"synthetic")`` reads the shipped file (``ensure_tiny_clip``).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .data.synthetic import OBJECTS, SyntheticSpec, class_names, generate_split_with_tracks
from .data.video import CLIP_MEAN, CLIP_STD
from .specs import register_model_configs

MODEL_NAME = "vidablate-tiny"
WEIGHTS_VERSION = "v2"  # bump when the recipe or the generator changes: cached files are rebuilt
BUILD_STEPS = 600
"""Optimizer steps of a build: 128 s on one CPU thread. The zero-shot accuracies plateau from
about 500 steps (600 steps: clip_acc 0.28, pair_acc 0.54 against chances 0.03 / 0.06;
frame_object_acc 1.00)."""
BUILD_THREADS = 1
"""CPU threads of a build: one, so no reduction depends on how work is split between threads."""
SHIPPED = Path(__file__).resolve().parent / "assets" / f"{MODEL_NAME}-synthetic-{WEIGHTS_VERSION}-s0.pt"
"""The seed-0 build, in the package."""
SHIPPED_CHECKSUM = "fd716e8b7b7e004fb736d742352283e448dff380f1a9f91b0cf9de8800e9ea3b"
"""``state_checksum`` of the shipped weights (a rebuild must reproduce it)."""
TEMPLATE = "a video of {}."  # the downstream prompt (ModelConfig.prompt_template)
TRAIN_SEED_BASE = 10_000  # pretraining data seeds: 10_000 + 1_000 * seed + chunk
EVAL_SEED_BASE = 9_000  # evaluation data seed: 9_000 + seed (test split)
NUM_CLASSES = 32

# Appearance vocabulary of the frame captions (DESIGN §4: "a {colour} {shape} on the {position}").
SIZE_WORDS = ("", "small ", "large ")  # medium objects get no size word
SMALL_BELOW, LARGE_ABOVE = 0.09, 0.14  # half-extent bounds of non-scaling objects (synthetic.py)
POSITIONS = (  # index = 3 * row + column, row/column 0 = top/left, 1 = centre, 2 = bottom/right
    "on the top left", "at the top", "on the top right",
    "on the left", "in the centre", "on the right",
    "on the bottom left", "at the bottom", "on the bottom right",
)  # fmt: skip
LOW_EDGE, HIGH_EDGE = 0.4, 0.6  # centre coordinates below/above are left/top, right/bottom


def appearance_captions() -> list[str]:
    """All frame captions, indexed by ``(object * 3 + size) * 9 + position``."""
    return [
        f"a {size}{obj} {pos}." for obj in OBJECTS for size in SIZE_WORDS for pos in POSITIONS
    ]


def clip_captions(num_classes: int = NUM_CLASSES) -> list[str]:
    """The downstream class prompts "a video of {name}." in protocol order."""
    return [TEMPLATE.format(name) for name in class_names(num_classes)]


def appearance_ids(objects: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Caption index per frame: objects int [N], centre [N, T, 2], scale [N, T] -> int64 [N, T]."""
    col = (centre[..., 0] >= LOW_EDGE).astype(np.int64) + (centre[..., 0] > HIGH_EDGE)
    row = (centre[..., 1] >= LOW_EDGE).astype(np.int64) + (centre[..., 1] > HIGH_EDGE)
    size = np.where(scale < SMALL_BELOW, 1, np.where(scale > LARGE_ABOVE, 2, 0))
    return ((np.asarray(objects)[:, None] * 3 + size) * 9 + row * 3 + col).astype(np.int64)


def _object_of_class() -> np.ndarray:
    """Object index of each of the 32 classes (class name = "<object> <motion>")."""
    names = class_names(NUM_CLASSES)
    return np.array([next(i for i, o in enumerate(OBJECTS) if n.startswith(o)) for n in names])


def _to_tensor(video: np.ndarray) -> torch.Tensor:
    """uint8 [N, T, H, W, 3] -> CLIP-normalised float32 [N, T, 3, H, W] (as SyntheticVideoIMU)."""
    frames = torch.from_numpy(video).permute(0, 1, 4, 2, 3).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 1, 3, 1, 1)
    return (frames - mean) / std


def _chunks(seed: int, clips_per_class: int) -> Iterator[dict[str, np.ndarray]]:
    """Endless fresh training chunks from data seeds 10_000 + 1_000 * seed + k."""
    k = 0
    while True:
        spec = SyntheticSpec(seed=TRAIN_SEED_BASE + 1_000 * seed + k % 1_000,
                             train_per_class=clips_per_class, test_per_class=1)
        yield generate_split_with_tracks(spec, "train")
        k += 1


def multi_positive_infonce(
    image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) when captions repeat: image [N, D] and text [K, D] normalised,
    ids [N] the caption row of each image. Image->text is cross-entropy over all K captions;
    text->image, for each caption that has images, spreads its target uniformly over them.
    Equals open_clip's ClipLoss for K = N, ids = arange(N)."""
    logits = logit_scale.exp() * image @ text.t()  # [N, K]
    i2t = F.cross_entropy(logits, ids)
    target = (ids[None, :] == torch.arange(len(text), device=ids.device)[:, None]).float()
    count = target.sum(dim=1, keepdim=True)
    used = count[:, 0] > 0
    target = target[used] / count[used]
    t2i = -(target * F.log_softmax(logits.t()[used], dim=1)).sum(dim=1).mean()
    return (i2t + t2i) / 2


def pair_losses(
    model: nn.Module,
    tokens: torch.Tensor,
    video: torch.Tensor,
    labels: torch.Tensor,
    frame_ids: torch.Tensor,
    clip_weight: float = 1.0,
    all_captions: bool = False,
) -> dict[str, torch.Tensor]:
    """Frame- and clip-level contrastive losses of one batch.

    tokens: [108 + 32, L] appearance then class captions (``caption_tokens``); video
    [B, T, 3, H, W] normalised; labels [B] class ids; frame_ids [B, T] appearance caption ids.
    ``all_captions``: every caption of the vocabulary is a candidate (negatives included),
    else only the batch's distinct captions (CLIP's in-batch negatives).
    """
    b, t = video.shape[:2]
    feats = model.encode_image(video.flatten(0, 1))  # [B*T, D], unnormalised like FrameEncoder
    clip = feats.view(b, t, -1).mean(dim=1)  # CLIP-Mean pooling (VideoCLIP.encode_video)
    n_app = len(tokens) - NUM_CLASSES
    if all_captions:
        f_rows, f_ids = torch.arange(n_app), frame_ids.flatten()
        c_rows, c_ids = torch.arange(NUM_CLASSES), labels
    else:
        f_rows, f_ids = torch.unique(frame_ids.flatten(), return_inverse=True)
        c_rows, c_ids = torch.unique(labels, return_inverse=True)
    text = model.encode_text(torch.cat([tokens[f_rows], tokens[n_app + c_rows]]))
    text = F.normalize(text, dim=-1)
    scale = model.logit_scale
    frame = multi_positive_infonce(F.normalize(feats, dim=-1), text[: len(f_rows)], f_ids, scale)
    video_loss = multi_positive_infonce(F.normalize(clip, dim=-1), text[len(f_rows):], c_ids,
                                        scale)
    return {"frame": frame, "clip": video_loss, "loss": frame + clip_weight * video_loss}


def caption_tokens(tokenizer: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """Tokens of ``appearance_captions() + clip_captions()`` with the model's tokenizer."""
    return tokenizer(appearance_captions() + clip_captions())


def create_tiny_clip(seed: int = 0) -> tuple[nn.Module, Callable[[list[str]], torch.Tensor]]:
    """A randomly initialised ``vidablate-tiny`` (torch seed ``seed``) and its tokenizer."""
    register_model_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(MODEL_NAME), open_clip.get_tokenizer(MODEL_NAME)


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 5% at progress 1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def stored_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict as stored: floating tensors rounded to float16 (half the size; the
    rounding is part of the build, so every copy of the weights is the same)."""
    return {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
            for k, v in model.state_dict().items()}


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes in key order (torch.save files
    differ byte-wise between saves, so the file's own hash would not identify the weights)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].contiguous().cpu().reshape(-1)
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def save_weights(model: nn.Module, out: str | Path) -> None:
    """torch.save ``stored_state`` to a temp file in ``out``'s directory, then os.replace it
    onto ``out``, so readers never see a partial file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(stored_state(model), f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is read by other processes
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pretrain_tiny_clip(
    out: str | Path,
    seconds: float = 0.0,
    max_steps: int | None = BUILD_STEPS,
    seed: int = 0,
    threads: int | None = BUILD_THREADS,
    log: Callable[[str], None] | None = print,
    **options: Any,
) -> dict[str, float]:
    """Pretrain ``vidablate-tiny`` (``train_tiny_clip``: until ``seconds`` elapse or
    ``max_steps`` steps are done; ``options`` are its keyword-only knobs), write its state_dict
    atomically to ``out`` and return the stats, ``evaluate_zero_shot``'s numbers and the
    weights' ``checksum`` included. The defaults are the deterministic build.
    The file loads with ``open_clip.create_model("vidablate-tiny", pretrained=str(out))``."""
    model, stats = train_tiny_clip(seconds, max_steps, seed, threads, log, **options)
    save_weights(model, out)
    stats["checksum"] = state_checksum(stored_state(model))  # type: ignore[assignment]
    if log is not None:
        log(f"pretrained weights written to {out}")
    return stats


def train_tiny_clip(
    seconds: float = 0.0,
    max_steps: int | None = BUILD_STEPS,
    seed: int = 0,
    threads: int | None = BUILD_THREADS,
    log: Callable[[str], None] | None = print,
    *,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    clip_weight: float = 1.0,
    all_captions: bool = False,
    clips_per_class: int = 32,
    eval_clips_per_class: int = 8,
) -> tuple[nn.Module, dict[str, float]]:
    """Train ``vidablate-tiny`` contrastively on synthetic pairs (DESIGN §4) until ``seconds``
    elapse (``seconds <= 0``: no time limit) or ``max_steps`` steps are done; return the model
    (eval mode) and its stats (steps, seconds, initial/final loss, ``evaluate_zero_shot``).

    ``batch_size`` counts clips (each contributes all its frames to the frame-level loss);
    AdamW, the learning rate follows warmup + cosine over the budget (whichever limit is
    tighter); ``all_captions`` uses every caption as a negative instead of the batch's own.
    Defaults (32 clips, 1e-3) were the best of a small sweep at one CPU thread (batch 16-64,
    lr 1e-3-5e-3, clip-loss weight, all-caption negatives). With ``seconds <= 0`` (a step
    budget only) and one thread a run is deterministic given ``seed``; a time budget
    (``seconds > 0``) gives machine-dependent weights.
    """
    if seconds <= 0 and max_steps is None:
        raise ValueError("train_tiny_clip needs seconds > 0 or max_steps")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model, tokenizer = create_tiny_clip(seed)
        tokens = caption_tokens(tokenizer)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        decay_ids = {id(p) for p in decay}
        rest = [p for p in model.parameters() if id(p) not in decay_ids]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=lr)
        objects = _object_of_class()
        gen = torch.Generator().manual_seed(seed)
        chunks = _chunks(seed, clips_per_class)
        warmup = 20 if max_steps is None else max(1, min(20, max_steps // 10))
        losses: list[float] = []
        parts: dict[str, list[float]] = {"frame": [], "clip": []}
        step, start, last_log = 0, time.perf_counter(), 0.0
        model.train()
        while True:
            data = next(chunks)
            video = _to_tensor(data["video"])
            labels = torch.from_numpy(data["label"])
            frame_ids = torch.from_numpy(
                appearance_ids(objects[data["label"]], data["centre"], data["scale"]))
            order = torch.randperm(len(labels), generator=gen)
            done = False
            for i in range(0, len(order) - batch_size + 1, batch_size):
                elapsed = time.perf_counter() - start
                progress = elapsed / seconds if seconds > 0 else 0.0
                if max_steps is not None:
                    progress = max(progress, step / max_steps)
                if progress >= 1.0:
                    done = True
                    break
                for group in opt.param_groups:
                    group["lr"] = lr * _lr_factor(step, progress, warmup)
                idx = order[i: i + batch_size]
                loss = pair_losses(model, tokens, video[idx], labels[idx], frame_ids[idx],
                                   clip_weight, all_captions)
                opt.zero_grad(set_to_none=True)
                loss["loss"].backward()
                opt.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                losses.append(loss["loss"].item())
                for key in parts:
                    parts[key].append(loss[key].item())
                step += 1
                if log is not None and (elapsed - last_log >= 15 or step == 1):
                    last_log = elapsed
                    log(f"pretrain step {step} {elapsed:.0f}s loss {losses[-1]:.3f} "
                        f"(frame {parts['frame'][-1]:.3f}, clip {parts['clip'][-1]:.3f}) "
                        f"logit_scale {model.logit_scale.exp().item():.1f}")
            if done:
                break
        seconds_used = time.perf_counter() - start
        model.eval()
        tail = max(1, min(10, len(losses) // 4))
        stats = {
            "steps": float(step),
            "seconds": seconds_used,
            "initial_loss": losses[0] if losses else float("nan"),
            "final_loss": float(np.mean(losses[-tail:])) if losses else float("nan"),
            "final_frame_loss": float(np.mean(parts["frame"][-tail:])) if losses else float("nan"),
            "final_clip_loss": float(np.mean(parts["clip"][-tail:])) if losses else float("nan"),
            "logit_scale": model.logit_scale.exp().item(),
        }
        stats |= evaluate_zero_shot(model, tokenizer, seed, clips_per_class=eval_clips_per_class)
        if log is not None:
            log("pretrain done: " + ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))
        return model, stats
    finally:
        torch.set_num_threads(previous_threads)


@torch.no_grad()
def evaluate_zero_shot(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    seed: int = 0,
    *,
    clips_per_class: int = 8,
    batch_size: int = 64,
) -> dict[str, float]:
    """Zero-shot accuracies on fresh test clips (data seed 9_000 + seed, never trained on).

    clip_acc: 32-way, frame-mean image features vs "a video of {name}."; pair_acc: the same
    with reversal-pair confusions forgiven (classes 2k and 2k+1 are a pair); frame_acc: full
    appearance caption of single frames (108-way); frame_object_acc: its colour+shape part
    (4-way). chance_* give the chance levels; text_cos_* the mean cosine between class-prompt
    text features of reversal partners and of all other class pairs.
    """
    spec = SyntheticSpec(seed=EVAL_SEED_BASE + seed, train_per_class=1,
                         test_per_class=clips_per_class)
    data = generate_split_with_tracks(spec, "test")
    was_training = model.training
    model.eval()
    try:
        tokens = caption_tokens(tokenizer)
        text = F.normalize(model.encode_text(tokens).float(), dim=-1)
        n_app = len(tokens) - NUM_CLASSES
        app_text, cls_text = text[:n_app], text[n_app:]
        labels = torch.from_numpy(data["label"])
        frame_ids = torch.from_numpy(
            appearance_ids(_object_of_class()[data["label"]], data["centre"], data["scale"]))
        clip_pred, frame_pred = [], []
        for i in range(0, len(labels), batch_size):
            video = _to_tensor(data["video"][i: i + batch_size])
            b, t = video.shape[:2]
            feats = model.encode_image(video.flatten(0, 1)).float()
            clip = F.normalize(feats.view(b, t, -1).mean(dim=1), dim=-1)
            clip_pred.append((clip @ cls_text.t()).argmax(dim=1))
            frame_pred.append((F.normalize(feats, dim=-1) @ app_text.t()).argmax(dim=1).view(b, t))
        cp, fp = torch.cat(clip_pred), torch.cat(frame_pred)
        sims = cls_text @ cls_text.t()
        partner = torch.arange(NUM_CLASSES) ^ 1
        other = ~torch.eye(NUM_CLASSES, dtype=torch.bool)
        other[torch.arange(NUM_CLASSES), partner] = False
        per_object = 3 * len(POSITIONS)
        return {
            "clip_acc": float((cp == labels).float().mean()),
            "pair_acc": float((cp // 2 == labels // 2).float().mean()),
            "frame_acc": float((fp == frame_ids).float().mean()),
            "frame_object_acc": float((fp // per_object == frame_ids // per_object).float().mean()),
            "chance_clip": 1.0 / NUM_CLASSES,
            "chance_pair": 2.0 / NUM_CLASSES,
            "chance_frame": 1.0 / n_app,
            "chance_frame_object": 1.0 / len(OBJECTS),
            "text_cos_reversal": float(sims[torch.arange(NUM_CLASSES), partner].mean()),
            "text_cos_other": float(sims[other].mean()),
        }
    finally:
        model.train(was_training)


def default_weights_path(seed: int = 0) -> Path:
    """``$VIDABLATE_CACHE`` (else ~/.cache/vidablate) / vidablate-tiny-synthetic-v2-s{seed}.pt."""
    root = os.environ.get("VIDABLATE_CACHE") or Path.home() / ".cache" / "vidablate"
    return Path(root) / f"{MODEL_NAME}-synthetic-{WEIGHTS_VERSION}-s{seed}.pt"


def ensure_tiny_clip(seed: int = 0) -> Path:
    """The pretrained weights of build ``seed``: the shipped file for seed 0, else the cached
    build, made once if missing (``pretrain_tiny_clip``'s deterministic defaults).

    An fcntl lock next to the file serialises builders: parallel Ray trials on one machine wait
    for the first one and then reuse its file. Other machines build their own copy, the same.
    """
    if seed == 0 and SHIPPED.is_file():
        return SHIPPED
    path = default_weights_path(seed)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.is_file():
                pretrain_tiny_clip(path, max_steps=BUILD_STEPS, seed=seed)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def weights_checksum(path: str | Path) -> str:
    """``state_checksum`` of a weights file."""
    return state_checksum(torch.load(path, map_location="cpu", weights_only=True))
