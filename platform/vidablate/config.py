"""Typed experiment configuration: every toggle and knob, validated before any trial starts.

``ModelConfig`` is composed from the backbone knobs and each paper's knob dataclass
(``vidablate.modules.<paper>``, listed by ``vidablate.modules.registry``), so its keys stay flat
(``model.sgam``, ``model.mmb_step``). Each paper validates its own knobs; this file holds the
data, training and evaluation configs and the checks across sections. A module never sees
these dataclasses: the composer (``vidablate.model``) and each paper's build step map them to
explicit constructor arguments. Defaults cite the paper sentence they follow.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .data.synthetic import class_names as synthetic_class_names
from .data.video import AUG_STYLES
from .errors import ConfigError
from .modules import registry
from .specs import vision_spec, weights_need_quick_gelu
from .stages import STAGE_LABELS, Paper, ValidationContext, claimed_stages


@dataclass
class BackboneKnobs:
    """The backbone, its weights and the trainable boundary: the knobs every paper shares."""

    backbone: str = "vidablate-tiny"
    """open_clip model name; ``ViT-B-16-quickgelu`` for real runs with OpenAI weights (isclip
    §III and the other papers: CLIP ViT-B/16; OpenAI CLIP and the official X-CLIP use QuickGELU,
    which open_clip's plain ``ViT-B-16`` config replaces by nn.GELU)."""
    pretrained: str | None = None
    """``openai`` (downloads), another open_clip tag, a local weights file, ``synthetic`` (the
    pretrained tiny CLIP) or None for random weights. A tag whose weights were trained with
    QuickGELU on a config without it is an error (``vidablate.specs.QUICK_GELU_TAGS``)."""
    prompt_template: str = "a video of {}."
    """Hand-crafted class prompt (isclip §II-A uses "a photo of a [Class]")."""
    trainable_blocks: int = 2
    """Fine-tune the last k visual blocks (isclip §II-B: "last two blocks")."""
    train_visual_proj: bool = True
    """Fine-tune the visual projection ("the last fully connected layer", isclip §II-B)."""
    train_text: bool = False
    """Fine-tune the CLIP text tower (X-CLIP Table 7); frozen (and cached) by default."""
    trim_text: bool = True
    """Run the text tower only up to the batch's last end-of-text token (a cost knob: CLIP's
    causal tower reads its feature there, so features match the full 77-position run to float
    rounding; ``backbone.TextEncoder``). Off runs every position, as open_clip does."""
    temperature: float = 0.0
    """tau of the cosine logits, logits = cos / tau; 0 = the backbone's logit scale
    (exp(logit_scale) = 100 for OpenAI CLIP, which X-CLIP, STDD, OmniCLIP and IS-CLIP keep).
    MotionPrompt §4.1 sets tau = 0.07 (Eq. 3)."""


def _inputs(self: Any) -> frozenset[str]:
    """Batch inputs besides the video this configuration reads (e.g. ``{"imu"}``)."""
    out: frozenset[str] = frozenset()
    for paper in registry.papers():
        out |= paper.inputs(self)
    return out


def compose_model_config(papers: list[Paper], base: type = BackboneKnobs) -> type:
    """A dataclass with the fields of ``base`` and of every paper's knob dataclass (flat keys:
    ``model.sgam``, ``model.mmb_step``), fields in composer order."""
    bases = tuple(p.knobs for p in reversed(papers)) + (base,)
    namespace = {"inputs": _inputs, "uses_imu": property(lambda self: "imu" in self.inputs()),
                 "__doc__": "The one VideoCLIP: the backbone knobs plus every paper's toggles "
                            "and knobs (" + ", ".join(p.name for p in papers) + ")."}
    cls = dataclasses.make_dataclass("ModelConfig", [], bases=bases, namespace=namespace)
    cls.__module__ = __name__  # pickles by reference, as a class written in this file would
    return cls


ModelConfig = compose_model_config(registry.papers())
"""The model config of the built-in papers (``vidablate.modules.registry.PAPERS``)."""

_COMPOSED: dict[tuple[str, ...], type] = {}


def model_config_class() -> type:
    """``ModelConfig``, or a subclass with the knobs of papers registered since import (e.g. a
    toy paper in a test, ``registry.registered``)."""
    extra = [p for p in registry.papers() if p.knobs not in ModelConfig.__mro__]
    if not extra:
        return ModelConfig
    key = tuple(p.name for p in extra)
    if key not in _COMPOSED:
        _COMPOSED[key] = compose_model_config(extra, base=ModelConfig)
    return _COMPOSED[key]


@dataclass
class DataConfig:
    """Dataset, clip sampling and protocol. ``synthetic`` is the embedded default; any other
    ``dataset`` name reads Parquet manifests (``vidablate.data.manifest``)."""

    dataset: str = "synthetic"
    """``synthetic`` (generated in memory) or the name of a manifest dataset (e.g. ``hmdb51``);
    a manifest dataset needs ``train_manifest``, ``test_manifest`` and ``class_names_file``."""
    protocol: str = "base_novel"
    """``base_novel``: train on the first ``base_classes``, report base and novel accuracy and
    their harmonic mean (isclip §III). ``closed_set``: train and test on every class, report
    top-1/top-5 (the closed-set tables of xclip, motionprompt, stdd, omniclip).
    ``cross_dataset``: train on every class of this dataset, evaluate zero-shot on each of
    ``cross_manifests`` with the classes of ``cross_class_names_file``; report the mean and
    std of top-1/top-5 over those splits (xclip Table 3, motionprompt Table 6: K400 ->
    HMDB51/UCF101, three splits; motionprompt Table 7: HMDB51 <-> UCF101)."""
    num_classes: int = 32
    """UESTC-MMEA-CL has 32 classes (isclip §III). For a manifest dataset it must equal the
    number of names in ``class_names_file`` (checked)."""
    base_classes: int = 16
    """The first K classes are base (seen), the rest novel (isclip §III: 16 or 24)."""
    num_frames: int = 8
    """Frames T fed to the model per clip (isclip §II-A: N frames at equal intervals; X-CLIP
    and MotionPrompt: 8)."""
    image_size: int = 32
    """Input resolution (224 for ViT-B/16; 32 for the tiny CLIP)."""
    sampling: str = "sparse"
    """``sparse``: T segments, one frame each (TSN; the X-CLIP default and isclip's "equal
    intervals"). ``dense``: T consecutive frames every ``sampling_rate`` frames (SlowFast)."""
    sampling_rate: int = 8
    """Frame stride of dense sampling (SlowFast's 8x8 setting)."""
    train_per_class: int = 24
    """Synthetic: clips per class in the train split."""
    test_per_class: int = 8
    """Synthetic: clips per class in the test split."""
    source_frames: int = 0
    """Synthetic: frames rendered per clip before sampling; 0 = ``num_frames`` (each rendered
    frame is fed). With more frames than T, ``sampling`` and multi-view evaluation choose
    among them, so the frame-count tables vary T over the same videos."""
    imu_rate: int = 16
    """IMU samples per model frame: the STFT input is T * imu_rate samples."""
    imu_span: str = "clip"
    """Which IMU a clip gets: ``clip`` = the time span the sampled clip covers (every frame of
    sparse sampling's segments; a dense clip's window; each evaluation view its own), resampled
    to T * imu_rate samples (isclip §II-B: IMU data "of the same time period"); ``frames`` =
    only the sampled frames' own 1/fps spans, imu_rate samples each (for 8 sparse frames of a
    10 s, 30 fps video that is 2.7 % of its duration)."""
    num_distractors: int = 1
    """Synthetic: distractor objects per clip."""
    outside_object: bool = False
    """Synthetic mechanism variant: frames outside the IMU-active window show another object
    (SGAM's claim, isclip §II-D; ``vidablate.data.synthetic.SyntheticSpec``)."""
    distractor_style: str = "blob"
    """Synthetic: ``blob`` (grey discs) | ``object`` (mechanism variant: distractors are other
    objects, larger than the labelled one, absent from the IMU; SIRM's claim, isclip §II-C)."""
    object_scale_range: float = 1.0
    """Synthetic mechanism variant: s > 1 scales each clip's object by a factor log-uniform in
    [1/s, s] (SPG's claim, omniclip §3.2); 1 = off."""
    seed: int = -1
    """Seed of the synthetic generator; -1 = ``trainer.seed`` (resolved by ``validate``), so
    every row of a table sees the same data under one seed and each seed is its own data draw:
    mean +- std and the claims' paired tests over seeds cover the data, not only the
    initialisation. Set it >= 0 to keep one draw for every seed."""

    # ---------------------------------------------------------------- manifest datasets
    train_manifest: str = ""
    """Parquet manifest of the training split (``jobs/prepare_data.py`` writes them)."""
    test_manifest: str = ""
    """Parquet manifest of the evaluation split."""
    class_names_file: str = ""
    """Class-id -> name file (``id,name`` csv or one name per line); the text side reads it."""
    video_root: str = ""
    """Root of relative ``video``/``imu`` paths; empty = each manifest's own folder."""
    decoder: str = "auto"
    """decord | pyav | torchcodec | auto (decord where it has a wheel, else PyAV). torchcodec
    needs FFmpeg 4-8 shared libraries on the node (`vidablate.data.video`)."""
    fps: float = 30.0
    """Frame rate of frame-folder clips (video files carry their own)."""
    on_corrupt: str = "skip"
    """A video that fails to decode during training or evaluation: ``skip`` (count it, log the
    count to MLflow as ``corrupt_clips``, leave it out of loss and accuracy) or ``fail``."""
    validate: bool = True
    """Pre-flight check of every manifest row before any trial starts (files, labels, IMU)."""
    validate_decode: bool = True
    """Pre-flight also opens every video and decodes its first and last frame."""
    loader_workers: int = -1
    """DataLoader processes per Ray Train worker; -1 = 0 for synthetic (in memory), else
    ``trainer.cpus_per_worker`` - 1 (at least 1)."""
    prefetch_factor: int = 2
    """Batches each loader process decodes ahead."""

    # ------------------------------------------------------------------ augmentation
    augment: bool = False
    """Training augmentation (``aug_style``): off for the embedded default; the real presets
    and the recipes turn it on."""
    aug_style: str = "tsn"
    """tsn: multi-scale crop, flip, colour jitter, grayscale (official X-CLIP datasets/build.py
    train pipeline; omniclip Table 1) | jitter: short-side scale jitter [S, S*256/224], random
    crop, flip (PySlowFast, STDD's official code)."""
    aug_flip: float = 0.5
    """Probability of a horizontal flip of the whole clip (official X-CLIP Flip(0.5); omniclip
    Table 1: RandomFlip 0.5)."""
    aug_color_jitter: float = 0.8
    """Probability of ColorJitter(0.4, 0.4, 0.2, 0.1) (official X-CLIP AUG.COLOR_JITTER 0.8;
    omniclip Table 1: 0.8)."""
    aug_grayscale: float = 0.2
    """Probability of converting the clip to grayscale (official X-CLIP AUG.GRAY_SCALE 0.2;
    omniclip Table 1: 0.2)."""
    mixup: float = 0.0
    """Mixup alpha; 0 = off (official X-CLIP utils/config.py AUG.MIXUP: 0.8; omniclip Table 1:
    0.8). Targets become soft, label smoothing applies."""
    cutmix: float = 0.0
    """CutMix alpha; 0 = off (official X-CLIP utils/config.py AUG.CUTMIX: 1.0; omniclip Table 1:
    1.0). With ``mixup`` too, one is drawn per batch (official MIXUP_SWITCH_PROB 0.5)."""

    # ----------------------------------------------------------------------- k-shot
    cache_train_views: int = 4
    """Feature cache (``vidablate.data.cache``): fixed draws cached per training clip whose
    frames are random (TSN jitter, augmentation); epoch e reads draw e mod V. 0 = such trials
    do not use the cache (they decode and run the frozen blocks every epoch). A deterministic
    training input (the embedded default) is drawn once."""
    cache_dtype: str = "float32"
    """Stored precision of cached features: float32 (bit-identical to the uncached path) or
    float16 (half the storage)."""
    cache_part_rows: int = 256
    """Clips per cache part file: the unit of parallel building and of rebuilding."""
    k_shot: int = 0
    """Training examples per class drawn from the train split (xclip Table 5, motionprompt
    Table 5, omniclip Table 5: 2/4/8/16; motionprompt Table 4: K400 5-shot); 0 = every
    example."""
    k_shot_seed: int = -1
    """Seed of the k-shot draw; -1 = ``trainer.seed`` (each table seed draws its own split, so
    mean +- std over seeds is over splits). The drawn list is saved with the run."""
    k_shot_file: str = ""
    """A saved draw (the ``kshot_split.json`` artifact of an earlier run) to reuse exactly."""

    # -------------------------------------------------------------- cross-dataset
    cross_manifests: list[str] = field(default_factory=list)
    """Evaluation manifests of the target dataset for ``cross_dataset`` (one per split)."""
    cross_class_names_file: str = ""
    """Class names of the target dataset for ``cross_dataset``."""

    @property
    def is_synthetic(self) -> bool:
        return self.dataset == "synthetic"


@dataclass
class EvalConfig:
    """How a clip is scored: views per clip and how their scores combine."""

    temporal_views: int = 1
    """Clips sampled along time per video (xclip Table 6 "+ 4x3-views Inference" and official
    main.py TEST.NUM_CLIP 4; motionprompt §4.1 and omniclip §4.1: 4 x 3 views; 1 = single view)."""
    spatial_crops: int = 1
    """Spatial crops per clip: 1 (centre) or 3 (both ends and the centre of the long side;
    X-CLIP: 4 x 3 views)."""
    average: str = "prob"
    """Combine the views' scores: ``prob`` (mean of softmax, X-CLIP) or ``logit`` (mean of
    logits)."""
    sampling: str = ""
    """Test-time frame sampling: ``sparse`` | ``dense``; empty = ``data.sampling`` (xclip
    Table 11 crosses train and test sampling)."""

    @property
    def views(self) -> int:
        return self.temporal_views * self.spatial_crops


@dataclass
class TrainConfig:
    """Optimisation and the Ray Train scaling of one trial."""

    epochs: int = 50
    """isclip §III: 50 epochs. 0 evaluates the initial model only (CLIP zero-shot rows)."""
    batch_size: int = 16
    """Global batch size per optimizer step (isclip §III: 16); split evenly over workers and
    accumulation steps."""
    accumulation_steps: int = 1
    """Micro-batches whose gradients are summed before each optimizer step (X-CLIP's official
    TRAIN.ACCUMULATION_STEPS: 4, giving 8 GPUs x 8 clips x 4 = 256); the loss of each is
    divided by their count."""
    lr_visual: float = 1e-5
    """Adam learning rate for the CLIP visual encoder (isclip §III)."""
    lr_new: float = 1e-3
    """SGD learning rate for the new modules (isclip §III)."""
    lr_text: float = 0.0
    """Learning rate of the text tower when ``model.train_text``; 0 means ``lr_visual``."""
    visual_optimizer: str = "adam"
    """adam | adamw | sgd for the CLIP towers (isclip §III: Adam; X-CLIP official
    utils/optimizer.py and omniclip Table 1: AdamW)."""
    new_optimizer: str = "sgd"
    """adam | adamw | sgd for the new modules (isclip §III: SGD; X-CLIP official
    utils/optimizer.py and omniclip Table 1: AdamW)."""
    momentum: float = 0.9
    """SGD momentum for the new modules (isclip leaves it open)."""
    weight_decay: float = 0.0
    """Weight decay of every optimizer (X-CLIP official: 0.001; omniclip Table 1: 0.003, SSv2
    0.01; STDD official: 0.01; isclip and motionprompt name none: 0)."""
    adam_beta1: float = 0.9
    """Adam/AdamW beta1 (torch default; omniclip Table 1: 0.9)."""
    adam_beta2: float = 0.999
    """Adam/AdamW beta2 (torch default; omniclip Table 1: 0.98)."""
    lr_schedule: str = "constant"
    """constant | cosine (isclip names no schedule: constant; X-CLIP's official code, STDD's
    official code and omniclip Table 1: cosine)."""
    warmup_epochs: int = 0
    """Linear warm-up length in epochs; a run shorter than the warm-up ends inside it (omniclip
    Table 1 and X-CLIP's official config: 5; STDD's official README: 2; the others name none:
    0). Per epoch (``schedule_unit=epoch``) epoch e < W trains at (e+1)/(W+1) of the rate."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine schedule as a fraction of the learning rate (omniclip Table 1:
    minimal learning rate 2e-5 for 2e-3, i.e. 0.01; X-CLIP's official scheduler: lr / 100;
    STDD's official README: COSINE_END_LR 3.33e-8 for 3.33e-6)."""
    schedule_unit: str = "epoch"
    """When the rate changes: epoch (once per epoch) | step (every optimizer step, as X-CLIP's
    official timm CosineLRScheduler with t_in_epochs=False and STDD's PySlowFast schedule)."""
    warmup_start: float = 0.0
    """With ``schedule_unit=step``: the warm-up rises linearly from this fraction of the rate
    (X-CLIP official: warmup_lr_init 0; STDD official: WARMUP_START_LR 3.33e-8 / BASE_LR
    3.33e-6 = 0.01)."""
    cosine_after_warmup: bool = True
    """The cosine runs over the epochs after the warm-up (STDD official COSINE_AFTER_WARMUP);
    false = over the whole run from its start, the warm-up overriding its beginning (X-CLIP's
    official timm scheduler without warmup_prefix)."""
    weight_decay_skip: str = "none"
    """Parameters without weight decay: none | 1d (1-D tensors: biases, norms, scales; STDD
    official ZERO_WD_1D_PARAM) | 1d_pos (also positional embeddings; X-CLIP official
    set_weight_decay with no_weight_decay_keywords)."""
    grad_clip_norm: float = 0.0
    """Clip the L2 norm of all trainable gradients before each step; 0 = off (STDD official:
    CLIP_GRAD_L2NORM 1.0; the other papers name none)."""
    label_smoothing: float = 0.0
    seed: int = 0
    num_workers: int = 1
    """Ray Train workers (DDP); 0 with ``executor=train`` is Ray Train's local mode (the loop
    in the trial's process, no fault tolerance)."""
    executor: str = "auto"
    """Where a trial's training loop runs: ``train`` (a Ray Train ``TorchTrainer``: its
    controller, worker group and placement group start for every trial), ``trial`` (in the
    Ray Tune trial's own process: one worker, none of that start-up; a lost process or node
    is relaunched by Tune from the last checkpoint up to ``max_failures`` times, and a drained
    node gets a just-in-time checkpoint, as under Ray Train), or ``auto`` (``trial`` for at
    most one worker, ``train`` for DDP). Not from a paper: the platform's choice, measured in
    ``benchmarks/trial_overhead.py``."""
    use_gpu: bool = False
    cpus_per_worker: int = 1
    packed_gpu_fraction: float = 0.25
    """GPU share a worker asks for when its trial is packed: it reads cached whole-tower
    features and trains only light modules, so several such trials share one GPU (4 by
    default). Trials that run ViT blocks keep a whole GPU."""
    amp: bool = True
    """Mixed precision (bf16 autocast) on GPU; ignored on CPU."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (the first steps pay for compilation)."""
    compile_mode: str = "default"
    """``torch.compile`` mode: default | reduce-overhead | max-autotune."""
    activation_checkpointing: bool = False
    """Recompute the trainable ViT blocks in the backward pass instead of storing their
    activations: less memory for full fine-tuning (X-CLIP, STDD full) at about one extra
    forward of those blocks."""
    epoch_average: bool = False
    """Evaluate the uniform average of the trainable weights at the end of each epoch from
    ``epoch_average_start`` on, instead of the last weights (stdd §Implementation Details,
    following Open-VCLIP: "the models learned in different epochs are averaged")."""
    epoch_average_start: int = 1
    """First epoch (1-based) whose weights enter the average (stdd leaves it open: 1, every
    epoch). Until then evaluation uses the current weights."""
    checkpoint_every: int = 1
    """Save a resumable checkpoint every k epochs (and always after the last)."""
    max_failures: int = 2
    """Ray Train worker-failure retries; each retry resumes from the last checkpoint."""
    preemption_check_every: int = 20
    """Training steps between checks of ``ray.train.get_preemption_info()`` (a barrier across
    workers); when a node is about to be preempted a just-in-time checkpoint is saved mid-epoch
    and the restarted run resumes at that step. 0 = off."""
    eval_batch_size: int = 64
    eval_every: int = 1
    """Evaluate base/novel accuracy every k epochs (and always after the last)."""


@dataclass
class ExperimentConfig:
    """Everything one trial needs."""

    model: ModelConfig = field(default_factory=lambda: model_config_class()())
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> ExperimentConfig:
        """Raise ConfigError naming the field or the conflicting toggles; return self (with
        ``data.seed=-1`` resolved to ``trainer.seed``)."""
        m, d, t = self.model, self.data, self.trainer
        if m.trainable_blocks < 0:
            raise ConfigError("model.trainable_blocks must be >= 0")
        if not m.temperature >= 0:
            raise ConfigError(f"model.temperature must be >= 0 (0 = the backbone's logit scale), "
                              f"got {m.temperature}")
        spec = vision_spec(m.backbone)
        if spec is not None and weights_need_quick_gelu(m.pretrained) and not spec.quick_gelu:
            raise ConfigError(
                f"model.pretrained={m.pretrained!r} weights were trained with QuickGELU, but "
                f"model.backbone={m.backbone!r} builds nn.GELU; use "
                f"model.backbone={m.backbone + '-quickgelu'!r}")
        papers = registry.papers()
        claimed = claimed_stages(m, papers)
        for stage, label in STAGE_LABELS.items():
            on = claimed.get(stage, [])
            if len(on) > 1:
                raise ConfigError(
                    f"model.{' and model.'.join(on)} both replace the {label}; turn one off")
        names = (synthetic_class_names(d.num_classes)
                 if d.is_synthetic and 2 <= d.num_classes <= 32 else None)
        ctx = ValidationContext(m, d, spec, claimed, names)
        for paper in papers:
            if paper.validate is not None:
                paper.validate(ctx)
        if "{}" not in m.prompt_template:
            raise ConfigError("model.prompt_template must contain '{}' for the class name")
        _validate_data(m, d, t, self.eval)
        if d.seed < -1:
            raise ConfigError(f"data.seed must be >= 0, or -1 for trainer.seed; got {d.seed}")
        if d.seed == -1:
            d.seed = t.seed
        if d.protocol not in PROTOCOLS:
            raise ConfigError(f"data.protocol must be one of {PROTOCOLS}, got {d.protocol!r}")
        if d.protocol == "base_novel" and not 1 <= d.base_classes < d.num_classes:
            raise ConfigError(
                f"data.base_classes={d.base_classes} must be in [1, data.num_classes-1="
                f"{d.num_classes - 1}] so that both base and novel classes exist"
            )
        for name in ("batch_size", "checkpoint_every", "eval_batch_size", "eval_every",
                     "accumulation_steps"):
            if getattr(t, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1")
        if t.epochs < 0:
            raise ConfigError("trainer.epochs must be >= 0 (0 = evaluate the initial model only, "
                              "e.g. CLIP zero-shot)")
        for name in ("visual_optimizer", "new_optimizer"):
            if getattr(t, name) not in OPTIMIZERS:
                raise ConfigError(f"trainer.{name} must be one of {OPTIMIZERS}, "
                                  f"got {getattr(t, name)!r}")
        if t.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"trainer.lr_schedule must be constant|cosine, got {t.lr_schedule!r}")
        for name, allowed in (("schedule_unit", ("epoch", "step")),
                              ("weight_decay_skip", ("none", "1d", "1d_pos"))):
            if getattr(t, name) not in allowed:
                raise ConfigError(f"trainer.{name} must be one of {allowed}, got "
                                  f"{getattr(t, name)!r}")
        if not 0.0 <= t.warmup_start < 1.0 or t.grad_clip_norm < 0 or t.weight_decay < 0:
            raise ConfigError("trainer.warmup_start must be in [0, 1), trainer.grad_clip_norm "
                              ">= 0 and trainer.weight_decay >= 0")
        _validate_numbers(self)
        if t.epoch_average_start < 1:
            raise ConfigError(f"trainer.epoch_average_start must be >= 1, got "
                              f"{t.epoch_average_start}")
        if t.warmup_epochs < 0:
            raise ConfigError(f"trainer.warmup_epochs must be >= 0, got {t.warmup_epochs}")
        if not 0.0 <= t.min_lr_ratio < 1.0:
            raise ConfigError(f"trainer.min_lr_ratio must be in [0, 1), got {t.min_lr_ratio}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(t, name) < 1.0:
                raise ConfigError(f"trainer.{name} must be in [0, 1), got {getattr(t, name)}")
        if t.preemption_check_every < 0:
            raise ConfigError("trainer.preemption_check_every must be >= 0 (0 = off)")
        if t.num_workers < 0 or t.max_failures < 0:
            raise ConfigError("trainer.num_workers and trainer.max_failures must be >= 0")
        if t.executor not in EXECUTORS:
            raise ConfigError(f"trainer.executor must be one of {EXECUTORS}, got "
                              f"{t.executor!r}")
        if t.executor == "trial" and t.num_workers > 1:
            raise ConfigError(f"trainer.executor=trial runs one worker in the trial's own "
                              f"process, but trainer.num_workers={t.num_workers}; use "
                              f"trainer.executor=train (or auto) for DDP")
        if t.num_workers > 1 and t.batch_size % t.num_workers:
            raise ConfigError(
                f"trainer.batch_size={t.batch_size} must divide evenly over "
                f"trainer.num_workers={t.num_workers}"
            )
        if t.batch_size % (max(t.num_workers, 1) * t.accumulation_steps):
            raise ConfigError(
                f"trainer.batch_size={t.batch_size} must divide evenly over trainer.num_workers="
                f"{t.num_workers} x trainer.accumulation_steps={t.accumulation_steps}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "config") -> ExperimentConfig:
        """Build from nested dicts, rejecting unknown sections and keys by name."""
        raw = dict(raw or {})
        sections = {"model": model_config_class(), "data": DataConfig, "trainer": TrainConfig,
                    "eval": EvalConfig}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; "
                              f"expected {sorted(sections)}")
        built = {name: _build(kind, {} if raw.get(name) is None else raw[name], f"{where}.{name}")
                 for name, kind in sections.items()}
        return cls(**built)


OPTIMIZERS = ("adam", "adamw", "sgd")
EXECUTORS = ("auto", "trial", "train")
"""``trainer.executor``: where a trial's loop runs (``executor_of`` resolves ``auto``)."""


def executor_of(trainer: dict[str, Any]) -> str:
    """``trial`` or ``train`` for a trainer section (a dict, as trials carry it): ``auto``
    runs a trial of at most one worker in its own process and DDP under Ray Train."""
    chosen = trainer.get("executor", "auto")
    if chosen == "auto":
        return "trial" if int(trainer.get("num_workers", 1)) <= 1 else "train"
    return chosen
PROTOCOLS = ("base_novel", "closed_set", "cross_dataset")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
SAMPLINGS = ("sparse", "dense")
DECODERS = ("auto", "decord", "pyav", "torchcodec")
DATA_PATH_FIELDS = ("train_manifest", "test_manifest", "class_names_file", "video_root",
                    "k_shot_file", "cross_class_names_file")
"""DataConfig fields that hold paths (made absolute before trials leave the driver)."""


def _validate_data(m: ModelConfig, d: DataConfig, t: TrainConfig, e: EvalConfig) -> None:
    """Sampling, loading, k-shot and dataset-file knobs; files are checked to exist (their
    content is checked by the runner's pre-flight, ``vidablate.data.preflight``)."""
    spec = vision_spec(m.backbone)
    native = spec.square_image_size if spec is not None else None
    if native is not None and d.image_size != native:
        raise ConfigError(f"data.image_size={d.image_size} but model.backbone={m.backbone!r} takes "
                          f"{native}x{native} frames; set data.image_size={native}")
    if d.sampling not in SAMPLINGS:
        raise ConfigError(f"data.sampling must be one of {SAMPLINGS}, got {d.sampling!r}")
    if d.decoder not in DECODERS:
        raise ConfigError(f"data.decoder must be one of {DECODERS}, got {d.decoder!r}")
    if d.aug_style not in AUG_STYLES:
        raise ConfigError(f"data.aug_style must be one of {AUG_STYLES}, got {d.aug_style!r}")
    if d.imu_span not in ("clip", "frames"):
        raise ConfigError(f"data.imu_span must be clip|frames, got {d.imu_span!r}")
    if d.on_corrupt not in ("skip", "fail"):
        raise ConfigError(f"data.on_corrupt must be skip|fail, got {d.on_corrupt!r}")
    if t.compile_mode not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile_mode must be one of {COMPILE_MODES}, got "
                          f"{t.compile_mode!r}")
    if not 0.0 < t.packed_gpu_fraction <= 1.0:
        raise ConfigError(f"trainer.packed_gpu_fraction must be in (0, 1], got "
                          f"{t.packed_gpu_fraction}")
    if d.cache_dtype not in ("float32", "float16"):
        raise ConfigError(f"data.cache_dtype must be float32|float16, got {d.cache_dtype!r}")
    if d.cache_train_views < 0:
        raise ConfigError(f"data.cache_train_views must be >= 0, got {d.cache_train_views}")
    for name in ("num_frames", "image_size", "sampling_rate", "prefetch_factor", "imu_rate",
                 "cache_part_rows"):
        if getattr(d, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {getattr(d, name)}")
    if d.num_frames < 2:
        raise ConfigError(f"data.num_frames must be >= 2 (temporal modules need a clip), "
                          f"got {d.num_frames}")
    if d.loader_workers < -1 or d.k_shot < 0 or d.k_shot_seed < -1 or d.source_frames < 0:
        raise ConfigError("data.loader_workers >= -1, data.k_shot >= 0, data.k_shot_seed >= -1 "
                          "and data.source_frames >= 0 are required")
    if not d.fps > 0:
        raise ConfigError(f"data.fps must be > 0, got {d.fps}")
    for name in ("aug_flip", "aug_color_jitter", "aug_grayscale"):
        if not 0 <= getattr(d, name) <= 1:
            raise ConfigError(f"data.{name} is a probability in [0, 1], got {getattr(d, name)}")
    if d.mixup < 0 or d.cutmix < 0:
        raise ConfigError("data.mixup and data.cutmix are Beta alphas: >= 0 (0 = off)")
    if (d.mixup or d.cutmix) and m.uses_imu:
        raise ConfigError("data.mixup/data.cutmix mix video pixels but not the IMU stream that "
                          "model.sirm/model.sgam read; turn mixing or the IMU modules off")
    if (d.mixup or d.cutmix) and t.epochs == 0:
        raise ConfigError("data.mixup/data.cutmix apply to training, but trainer.epochs=0")
    if e.temporal_views < 1 or e.spatial_crops not in (1, 3):
        raise ConfigError(f"eval.temporal_views must be >= 1 and eval.spatial_crops 1 or 3, got "
                          f"{e.temporal_views} and {e.spatial_crops}")
    if e.sampling and e.sampling not in SAMPLINGS:
        raise ConfigError(f"eval.sampling must be one of {SAMPLINGS} or empty (= data.sampling), "
                          f"got {e.sampling!r}")
    if e.average not in ("prob", "logit"):
        raise ConfigError(f"eval.average must be prob|logit, got {e.average!r}")
    if not isinstance(d.cross_manifests, list) or not all(
            isinstance(x, str) for x in d.cross_manifests):
        raise ConfigError(f"data.cross_manifests must be a list of paths, "
                          f"got {d.cross_manifests!r}")
    if d.protocol == "cross_dataset":
        if not d.cross_manifests or not d.cross_class_names_file:
            raise ConfigError("data.protocol='cross_dataset' needs data.cross_manifests (one "
                              "manifest per target split) and data.cross_class_names_file")
    elif d.cross_manifests:
        raise ConfigError(f"data.cross_manifests is set but data.protocol={d.protocol!r}; use "
                          "data.protocol=cross_dataset")
    variants = [n for n, off in (("outside_object", False), ("distractor_style", "blob"),
                                 ("object_scale_range", 1.0)) if getattr(d, n) != off]
    if d.distractor_style not in ("blob", "object") or not d.object_scale_range >= 1.0:
        raise ConfigError(f"data.distractor_style must be blob|object (got "
                          f"{d.distractor_style!r}) and data.object_scale_range >= 1 (got "
                          f"{d.object_scale_range})")
    if variants and not d.is_synthetic:
        raise ConfigError(f"data.{', data.'.join(variants)} change the synthetic generator; "
                          f"data.dataset={d.dataset!r} reads manifests")
    if d.is_synthetic:
        if not 2 <= d.num_classes <= 32:
            raise ConfigError(f"data.num_classes must be in 2..32 for the synthetic dataset, "
                              f"got {d.num_classes}")
        if d.k_shot > d.train_per_class:
            raise ConfigError(f"data.k_shot={d.k_shot} exceeds the synthetic "
                              f"data.train_per_class={d.train_per_class}")
        for name in ("train_manifest", "test_manifest"):
            if getattr(d, name):
                raise ConfigError(f"data.{name} is set but data.dataset='synthetic'; name the "
                                  f"dataset (e.g. data.dataset=hmdb51) to read manifests")
    else:
        missing = [n for n in ("train_manifest", "test_manifest", "class_names_file")
                   if not getattr(d, n)]
        if d.protocol == "cross_dataset" or t.epochs == 0:
            missing = [n for n in missing if n != "train_manifest"]  # nothing is trained / seen
        if missing:
            raise ConfigError(f"data.dataset={d.dataset!r} reads manifests: set "
                              f"{', '.join('data.' + n for n in missing)} "
                              f"(jobs/prepare_data.py writes them)")
    for name in DATA_PATH_FIELDS:
        value = getattr(d, name)
        if value and not Path(value).exists():
            raise ConfigError(f"data.{name}={value!r}: no such file or folder")
    for value in d.cross_manifests:
        if not Path(value).exists():
            raise ConfigError(f"data.cross_manifests: {value!r}: no such file")


def _validate_numbers(cfg: ExperimentConfig) -> None:
    """Every number is finite; learning rates >= 0 (0 freezes that group), momentum and label
    smoothing in [0, 1): torch would reject them only inside the trial, minutes later."""
    for section in ("model", "data", "trainer", "eval"):
        for f in fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section}.{f.name} must be a finite number, got {value}")
    t = cfg.trainer
    for name in ("lr_visual", "lr_new", "lr_text"):
        if getattr(t, name) < 0:
            raise ConfigError(f"trainer.{name} must be >= 0 (0 freezes its parameters), got "
                              f"{getattr(t, name)}")
    for name in ("momentum", "label_smoothing"):
        if not 0.0 <= getattr(t, name) < 1.0:
            raise ConfigError(f"trainer.{name} must be in [0, 1), got {getattr(t, name)}")


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
