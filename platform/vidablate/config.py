"""Typed experiment configuration: every toggle and knob, validated before any trial starts.

A module never sees these dataclasses: the composer (`vidablate.model`) maps them to explicit
constructor arguments. Defaults cite the paper sentence they follow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value or combination is invalid; the message names the field."""


@dataclass
class ModelConfig:
    """The one VideoCLIP: backbone choice plus every module toggle.

    IS-CLIP (isclip §II): ``sirm``, ``sgam`` and the IMU branch (``imu_acc``, ``imu_gyro``);
    with both toggles off and ``distill`` on this is the paper's "Fine-tuned CLIP" baseline.
    """

    backbone: str = "vidablate-tiny"
    """open_clip model name; ``ViT-B-16`` for real runs (isclip §III: ViT-B/16)."""
    pretrained: str | None = None
    """``openai`` (downloads), a local weights file, or None for random weights."""
    prompt_template: str = "a video of {}."
    """Hand-crafted class prompt (isclip §II-A uses "a photo of a [Class]")."""

    # IS-CLIP (isclip §II)
    sirm: bool = False
    """Subject-object Interaction Refinement Module (isclip §II-C, Eq. 6-8)."""
    sgam: bool = False
    """Subject-motion Guided Aggregation Module (isclip §II-D)."""
    imu_acc: bool = True
    """Feed the accelerometer into f_IMU (isclip Table III)."""
    imu_gyro: bool = True
    """Feed the gyroscope into f_IMU (isclip Table III)."""
    stft_n_fft: int = 32
    """STFT window length in IMU samples (isclip Eq. 3 leaves it open)."""
    stft_hop: int = 8
    """STFT hop in IMU samples (isclip Eq. 3 leaves it open)."""
    stft_window: str = "hann"
    """STFT window function w(t) (isclip Eq. 3 leaves it open): hann | hamming | rect."""
    imu_width: int = 64
    """Channel width of the shared IMU encoder (isclip §II-B leaves it open)."""
    sirm_heads: int = 8
    """Attention heads in SIRM (isclip Eq. 8: i in [1, 8])."""
    sgam_hidden: int = 0
    """Hidden width of SGAM's MLP; 0 means the embedding width D (isclip §II-D leaves it open)."""

    # Feature distillation and the trainable boundary (isclip §II-B)
    distill: bool = True
    """L_kd = 1 - mean cos(teacher, student) against a frozen teacher copy (isclip Eq. 4)."""
    distill_weight: float = 1.0
    """Weight of L_kd in the total loss (isclip Eq. 5 adds it with weight 1)."""
    trainable_blocks: int = 2
    """Fine-tune the last k visual blocks (isclip §II-B: "last two blocks")."""
    train_visual_proj: bool = True
    """Fine-tune the visual projection ("the last fully connected layer", isclip §II-B)."""
    train_text: bool = False
    """Fine-tune the CLIP text tower (X-CLIP Table 7); frozen (and cached) by default."""

    # ----------------------------------------------------------------- X-CLIP (xclip §3)
    # (section owned by modules/xclip.py; knob names start with cct_, mit_, vprompt_)

    # ----------------------------------------------------- MotionPrompt (motionprompt §3)
    # (section owned by modules/motionprompt.py; knob names start with mmb_, map_, mcb_)

    # ------------------------------------------------------------------- STDD (stdd §3)
    # (section owned by modules/stdd.py; knob names start with stca_, wsm_, mcm_, align_)

    # ------------------------------------------------------------- OmniCLIP (omniclip §3)
    # (section owned by modules/omniclip.py; knob names start with pta_, spg_, omni_)

    @property
    def uses_imu(self) -> bool:
        """True when the IMU branch is built (a module consumes f_IMU)."""
        return self.sirm or self.sgam


@dataclass
class DataConfig:
    """Dataset and zero-shot protocol. ``synthetic`` is the embedded default."""

    dataset: str = "synthetic"
    num_classes: int = 32
    """UESTC-MMEA-CL has 32 classes (isclip §III)."""
    base_classes: int = 16
    """The first K classes are base (seen), the rest novel (isclip §III: 16 or 24)."""
    num_frames: int = 8
    """Frames N per clip, extracted at equal intervals (isclip §II-A)."""
    image_size: int = 32
    train_per_class: int = 24
    test_per_class: int = 8
    imu_rate: int = 16
    """IMU samples per video frame."""
    num_distractors: int = 1
    seed: int = 0
    """Seed of the synthetic generator (fixed across trials so every row sees the same data)."""


@dataclass
class TrainConfig:
    """Optimisation and the Ray Train scaling of one trial."""

    epochs: int = 50
    """isclip §III: 50 epochs."""
    batch_size: int = 16
    """Global batch size (isclip §III: 16); split evenly over workers."""
    lr_visual: float = 1e-5
    """Adam learning rate for the CLIP visual encoder (isclip §III)."""
    lr_new: float = 1e-3
    """SGD learning rate for the new modules (isclip §III)."""
    lr_text: float = 0.0
    """Learning rate of the text tower when ``model.train_text``; 0 means ``lr_visual``."""
    visual_optimizer: str = "adam"
    """adam | adamw | sgd for the CLIP towers (isclip §III: Adam; X-CLIP §4.1: AdamW)."""
    new_optimizer: str = "sgd"
    """adam | adamw | sgd for the new modules (isclip §III: SGD; X-CLIP §4.1: AdamW)."""
    momentum: float = 0.9
    """SGD momentum for the new modules (isclip leaves it open)."""
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    """constant | cosine over the epochs (isclip names no schedule: constant)."""
    label_smoothing: float = 0.0
    seed: int = 0
    num_workers: int = 1
    """Ray Train workers (DDP); 0 runs the loop in-process (Ray Train local mode)."""
    use_gpu: bool = False
    cpus_per_worker: int = 1
    amp: bool = True
    """Mixed precision (bf16 autocast) on GPU; ignored on CPU."""
    checkpoint_every: int = 1
    """Save a resumable checkpoint every k epochs (and always after the last)."""
    max_failures: int = 2
    """Ray Train worker-failure retries; each retry resumes from the last checkpoint."""
    eval_batch_size: int = 64
    eval_every: int = 1
    """Evaluate base/novel accuracy every k epochs (and always after the last)."""


@dataclass
class ExperimentConfig:
    """Everything one trial needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> ExperimentConfig:
        """Raise ConfigError naming the field or the conflicting toggles; return self."""
        m, d, t = self.model, self.data, self.trainer
        if m.uses_imu and not (m.imu_acc or m.imu_gyro):
            on = [n for n in ("sirm", "sgam") if getattr(m, n)]
            raise ConfigError(
                f"model.{'/'.join(on)} needs f_IMU but both model.imu_acc and model.imu_gyro "
                "are off; turn a sensor on or the module off"
            )
        if m.stft_n_fft < 2 or m.stft_hop < 1 or m.stft_hop > m.stft_n_fft:
            raise ConfigError("model.stft_n_fft must be >= 2 and 1 <= model.stft_hop <= n_fft")
        if m.stft_window not in ("hann", "hamming", "rect"):
            raise ConfigError(f"model.stft_window must be hann|hamming|rect, got {m.stft_window!r}")
        if m.trainable_blocks < 0:
            raise ConfigError("model.trainable_blocks must be >= 0")
        if m.sirm_heads < 1:
            raise ConfigError("model.sirm_heads must be >= 1")
        if m.sirm and (m.sgam_hidden < 0 or m.imu_width < 1):
            raise ConfigError("model.sgam_hidden must be >= 0 and model.imu_width >= 1")
        if m.sirm:
            from .backbone import embed_dim_of

            dim = embed_dim_of(m.backbone)
            if dim is not None and dim % m.sirm_heads:
                raise ConfigError(f"model.sirm_heads={m.sirm_heads} must divide the embedding "
                                  f"width {dim} of model.backbone={m.backbone!r}")
        _validate_stage_conflicts(m)
        _validate_xclip(m, d)
        _validate_motionprompt(m, d)
        _validate_stdd(m, d)
        _validate_omniclip(m, d)
        if "{}" not in m.prompt_template:
            raise ConfigError("model.prompt_template must contain '{}' for the class name")
        if d.dataset != "synthetic":
            raise ConfigError(
                f"data.dataset={d.dataset!r}: only the embedded 'synthetic' dataset exists so far"
            )
        if not 1 <= d.base_classes < d.num_classes:
            raise ConfigError(
                f"data.base_classes={d.base_classes} must be in [1, data.num_classes-1="
                f"{d.num_classes - 1}] so that both base and novel classes exist"
            )
        if m.uses_imu and d.num_frames * d.imu_rate < m.stft_n_fft:
            raise ConfigError(
                f"model.stft_n_fft={m.stft_n_fft} is longer than the IMU clip "
                f"(data.num_frames*data.imu_rate={d.num_frames * d.imu_rate})"
            )
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_batch_size", "eval_every"):
            if getattr(t, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1")
        for name in ("visual_optimizer", "new_optimizer"):
            if getattr(t, name) not in OPTIMIZERS:
                raise ConfigError(f"trainer.{name} must be one of {OPTIMIZERS}, "
                                  f"got {getattr(t, name)!r}")
        if t.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"trainer.lr_schedule must be constant|cosine, got {t.lr_schedule!r}")
        if t.num_workers < 0 or t.max_failures < 0:
            raise ConfigError("trainer.num_workers and trainer.max_failures must be >= 0")
        if t.num_workers > 1 and t.batch_size % t.num_workers:
            raise ConfigError(
                f"trainer.batch_size={t.batch_size} must divide evenly over "
                f"trainer.num_workers={t.num_workers}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "config") -> ExperimentConfig:
        """Build from nested dicts, rejecting unknown sections and keys by name."""
        raw = dict(raw or {})
        sections = {"model": ModelConfig, "data": DataConfig, "trainer": TrainConfig}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; "
                              f"expected {sorted(sections)}")
        built = {name: _build(kind, {} if raw.get(name) is None else raw[name], f"{where}.{name}")
                 for name, kind in sections.items()}
        return cls(**built)


OPTIMIZERS = ("adam", "adamw", "sgd")

POOL_TOGGLES = ("sgam", "mmb")
"""Toggles that each replace the frame->video pool; at most one may be on."""
HEAD_TOGGLES = ("align", "linear_head")
"""Toggles that each replace the cosine head; at most one may be on."""
TEXT_TOGGLES = ("map", "learnable_ctx")
"""Toggles that each replace the hand-crafted text prompts; at most one may be on."""


def _validate_stage_conflicts(m: ModelConfig) -> None:
    """Modules that claim the same stage of the pipeline cannot be combined."""
    for stage, names in (("frame->video pool", POOL_TOGGLES), ("head", HEAD_TOGGLES),
                         ("text prompts", TEXT_TOGGLES)):
        on = [n for n in names if getattr(m, n, False)]
        if len(on) > 1:
            raise ConfigError(
                f"model.{' and model.'.join(on)} both replace the {stage}; turn one off")


def _validate_xclip(m: ModelConfig, d: DataConfig) -> None:
    """X-CLIP knobs (xclip §3)."""


def _validate_motionprompt(m: ModelConfig, d: DataConfig) -> None:
    """MotionPrompt knobs (motionprompt §3)."""


def _validate_stdd(m: ModelConfig, d: DataConfig) -> None:
    """STDD knobs (stdd §3)."""


def _validate_omniclip(m: ModelConfig, d: DataConfig) -> None:
    """OmniCLIP knobs (omniclip §3)."""


def _build(kind: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {values!r}")
    known = {f.name: f for f in fields(kind)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    return kind(**{k: _coerce(v, known[k], f"{where}.{k}") for k, v in values.items()})


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    """Check a scalar against the field's declared type (bools stay bools, ints stay ints)."""
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true/false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (nested dicts merge, scalars replace)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def dotted_to_nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"model.sirm": True}`` -> ``{"model": {"sirm": True}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested
