"""Typed experiment configuration: every toggle and knob, validated before any trial starts.

A module never sees these dataclasses: the composer (`vidablate.model`) maps them to explicit
constructor arguments. Defaults cite the paper sentence they follow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError


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
    cct: bool = False
    """Cross-frame communication (xclip §3.2, Eq. 7-9): per block a message token from each
    frame's CLS, fusion attention over the T messages, appended for the block's attention."""
    cct_blocks: str = "all"
    """Blocks that carry message tokens, 1-based: ``all``, ``1-12``, ``1,3,5`` (xclip §3.2: every
    block of the L_c-layer CCT)."""
    cct_heads: int = 0
    """Heads of the cross-frame fusion attention; 0 = the ViT's heads (official: width // 64)."""
    mit: bool = False
    """Multi-frame integration transformer (xclip Eq. 6): temporal position embedding +
    transformer + residual, then the mean pool."""
    mit_depth: int = 1
    """MIT layers L_m (xclip §4.1: "a simple 1-layer multi-frame integration transformer")."""
    mit_heads: int = 0
    """MIT heads; 0 = D // 64 (official)."""
    video_prompt: bool = False
    """Video-specific prompting (xclip §3.3, Eq. 10): text features query the time-averaged
    patch tokens; c_hat = c + alpha * c_tilde."""
    vprompt_layers: int = 2
    """Prompt generator blocks (xclip §4.1: "the number of the video-specific prompting blocks
    is 2")."""
    vprompt_heads: int = 0
    """Prompt generator heads; 0 = D // 64 (official)."""
    vprompt_alpha: float = 0.1
    """Initial value of the learnable per-channel alpha (xclip §3.3: "initial value of 0.1";
    official: one alpha per channel)."""
    linear_head: bool = False
    """"w/o text" (xclip Table 8): a randomly initialised linear classifier on the video
    embedding instead of the text branch; closed-set protocol only."""
    linear_head_classes: int = 32
    """Outputs of the linear head; must equal data.num_classes (checked), whose default it
    copies. A fixed size (not sized at the first call) so the optimizer and DDP see it."""
    prompt_ensemble: bool = False
    """Prompt ensembling (xclip Table 9, CLIP [36]): average the text features of 16
    hand-crafted templates (``modules.xclip.ENSEMBLE_TEMPLATES``) instead of
    ``prompt_template``."""
    learnable_ctx: bool = False
    """Learnable context vectors (xclip Table 9 "Vectors", CoOp [60]) replace the template."""
    learnable_ctx_length: int = 16
    """Number of learnable vectors (xclip §4.5: "learnable vectors [60] with length 16")."""
    learnable_ctx_init: str = ""
    """Phrase whose word embeddings initialise the first vectors; empty = N(0, 0.02) (CoOp's
    random init; xclip does not say)."""

    # ----------------------------------------------------- MotionPrompt (motionprompt §3)
    # (section owned by modules/motionprompt.py; knob names start with mmb_, map_, mcb_)
    mmb: bool = False
    """Motion Modeling Block as the frame->video pool (motionprompt §3.2, Eq. 4-6): motion
    transformer over frame differences + spatial transformer over frames, AvgPool sum."""
    mmb_spatial_only: bool = False
    """With ``mmb``: drop the motion stream, V = AvgPool(T_s(I)). This is the paper's
    "Baseline" pool (§4.1 i: "only one single Transformer to mimic the spatial stream"); the
    Baseline row is ``mmb + mmb_spatial_only`` with ``map`` and ``mcb`` off."""
    mmb_step: int = 4
    """Maximum temporal step s of Eq. 4, 1 <= s <= T-1 (§4.2: "we set the s to 4")."""
    mmb_motion_layers: int = 1
    """Layers of the motion transformer T_m (§3.2 leaves it open; one layer)."""
    mmb_spatial_layers: int = 1
    """Layers of the spatial transformer T_s (§3.2 leaves it open; one layer)."""
    mmb_heads: int = 8
    """Attention heads of T_m and T_s ("standard architecture in [40]": 8 heads)."""
    mmb_mlp_ratio: float = 4.0
    """FFN width / D of T_m and T_s ([40]: d_ff 2048 for d_model 512)."""
    mmb_dropout: float = 0.0
    """Dropout inside T_m and T_s (the paper names none)."""
    mmb_norm_first: bool = False
    """Pre-LN layers; False is the post-LN layer of [40] that §3.2 cites."""
    mmb_pos_emb: bool = False
    """Learnable position embeddings over the T frames (T_s) and the L differences (T_m);
    §3.2 names only MHSA + FFN. Without them the spatial-only Baseline is frame-order
    invariant, while the motion stream still sees order through the signs of I_j - I_i."""
    map: bool = False
    """Motion-Aware Prompts (motionprompt §3.3, Eq. 7): H learnable context vectors plus a
    motion adapter of the motion cue, one prompt per video. The cue is MMB's AvgPool(M);
    without MMB's motion stream, AvgPool of the raw frame differences of Eq. 4."""
    map_length: int = 5
    """H, the number of learnable vectors (§4.2: "we set H = 5")."""
    map_init: str = ""
    """Phrase whose first H tokens initialise the vectors; "" = Table 1's hand-crafted prompt of
    length H ("human action of" / "a human action of" / "a common human action of" for
    H = 3/4/5, §3.3 and §4.2), random N(0, 0.02) (CoOp) for other H."""
    map_hidden: int = 0
    """Squeezed width of the motion adapter (§3.3: "squeeze the dimension"); 0 = D // 16, the
    meta-net of CoCoOp [50] that MAP extends."""
    map_activation: str = "relu"
    """relu | gelu | tanh: the adapter's "non-linear activation" (§3.3; CoCoOp uses ReLU)."""
    map_zero_init: bool = False
    """Zero the adapter's last layer so MAP starts exactly at its initial phrase (the paper
    does not say how the adapter is initialised; default PyTorch init as CoCoOp)."""
    mcb: bool = False
    """Multimodal Communication Block (motionprompt §3.4, Eq. 2): SMA (text queries video) and
    SAA (video queries text), parallel cross attentions with residuals."""
    mcb_heads: int = 8
    """Heads of SMA and SAA (§3.4: "standard cross attention"; 8 as [40])."""
    mcb_video: str = "pooled"
    """SMA's key/value: ``pooled`` = the video representation V of Eq. 2 (one token);
    ``frames`` = the T frame features."""
    mcb_prenorm: bool = True
    """LayerNorm queries and keys/values inside SMA/SAA (text is unit-norm, video is not)."""

    # ------------------------------------------------------------------- STDD (stdd §3)
    # (section owned by modules/stdd.py; knob names start with stca_, wsm_, mcm_, align_)
    stca: bool = False
    """Space-time Cross Attention (stdd §3, Eq. 1-7): WSM -> MCM -> MHSA with the block's own
    attention -> padding -> short-cut, inside the ViT blocks; adds no parameters."""
    stca_blocks: str = "all"
    """Blocks with STCA, 1-based (``all``, ``1-12``, ``1,3,5``); stdd §3: "within each ViT
    block"."""
    wsm: bool = True
    """Window Shift Masking sub-toggle of ``stca`` (stdd Table 4 "WSM"); off = every patch
    token is visible and mixed at its own position."""
    wsm_w1: int = 2
    """Window height w1 in patches (stdd §4: "w1 = w2 = 2")."""
    wsm_w2: int = 2
    """Window width w2 in patches (stdd §4: "w1 = w2 = 2")."""
    wsm_ratio: float = 0.5
    """Mask ratio r, floor(r*w1*w2) tokens dropped per window (stdd §4: "a mask ratio of
    50%")."""
    wsm_train_phase: str = "shift"
    """Mask phases while training: shift (random start phase per clip, then periodic shift with
    t: Eq. 3; official spatial_repeat) | shuffle (those phases permuted over frames: official
    temporal_shuffle) | fixed. Evaluation always uses phase t mod w1*w2 (deterministic; the
    official code also shuffles at evaluation, not copied)."""
    mcm: bool = True
    """Multi-scale Channel Mixing sub-toggle of ``stca`` (stdd Table 4 "MCM")."""
    mcm_gamma: float = 0.03125
    """gamma of d_delta = gamma * D channels mixed from each side (Eq. 5); D/32 as the official
    README runs it (MODEL.CHANNEL_FOLD 32; code default 64)."""
    mcm_scales: str = "1,2"
    """Temporal scales delta, averaged (stdd §4: "temporal scales to [+-1, +-2]"; official
    TEMPORAL_SCALE [1,2])."""
    mcm_mode: str = "continual"
    """separate (Eq. 5) | continual (Eq. 6; Table 4 best; what the official code does)."""
    stca_shortcut: str = "mixed"
    """Short-cut of the per-scale MHSA: mixed (official ``x_mix + attention(ln_1(x_mix))``) |
    frame (the unmixed tokens z_t, Eq. 7 as printed)."""
    stca_query: str = "mixed"
    """Queries of the per-scale MHSA: mixed (MHSA on the mixed tokens, Eq. 7 and official) |
    frame (queries from the frame's own tokens, keys/values mixed; X-ViT style)."""
    stdd_adaptation: str = ""
    """stdd Table 4: "" (keep model.trainable_blocks / train_visual_proj) | frozen (no visual
    weight trains) | prompt (frozen backbone, per-block prompt MLP) | full (every visual
    weight, "fully-tuned"). Non-empty values override model.trainable_blocks (0 or all) and
    model.train_visual_proj."""
    stdd_prompt_len: int = 1
    """Prompt tokens per frame and block in prompt-based adaptation (not given in stdd)."""
    stdd_prompt_hidden: int = 0
    """Hidden width of the prompt MLP; 0 = ViT width / 4 (not given in stdd)."""
    st_aug: bool = False
    """Spatiotemporal text augmentation (stdd §3): several prompts per class read from
    ``align_prompt_file`` replace the template (the ASKG/LLM step that writes them is out of
    scope). With ``align`` the head sees every prompt, else their features are averaged."""
    align: bool = False
    """Frame-to-prompt alignment head (stdd Eq. 8): mean of frame->prompt and prompt->frame
    max-similarities over the frame features, no pooling; also used at inference."""
    align_prompt_file: str = ""
    """JSON file (class name -> list of prompts, or -> {"spatial": [...], "temporal": [...]})
    read by ``st_aug``; empty = the shipped synthetic file
    (vidablate/assets/prompts/synthetic_st_prompts.json)."""
    align_prompt_sets: str = "all"
    """Prompts used by ``st_aug``: all ([S]+[T]) | spatial ([S]) | temporal ([T]) (stdd
    Figure 4)."""

    # ------------------------------------------------------------- OmniCLIP (omniclip §3)
    # (section owned by modules/omniclip.py; knob names start with pta_, spg_, omni_)
    pta: bool = False
    """Parallel Temporal Adapter (omniclip §3.3, Eq. 3-4, 7): alpha * Up(Attn_T(Down(V)))."""
    pta_ratio: float = 0.25
    """PTA down-projection ratio, bottleneck = ratio * ViT width (omniclip Table 8: 1/4 best of
    1/8, 1/4, 1/2, 1)."""
    pta_blocks: str = "1-12"
    """Blocks carrying PTA, 1-based inclusive ranges ("1-3", "1-3,7-9") numbered on a
    ``pta_blocks_depth``-block reference tower and mapped proportionally onto the backbone
    (omniclip Table 10: all of 1-12 best). On the 4-block tiny tower each group of three is one
    block; on ViT-B/16 it is the identity."""
    pta_blocks_depth: int = 12
    """Depth of the numbering used by ``pta_blocks``: 12 = the paper's ViT-B/16 numbering;
    0 = the backbone's own blocks (no mapping)."""
    pta_mode: str = "parallel"
    """parallel (Eq. 4, the paper's design) | cascade | attn_parallel (omniclip Table 11,
    Figure 5)."""
    pta_heads: int = 0
    """Heads of PTA's temporal attention; 0 = the ViT's heads ("the same structure as the
    attention block in the ViT", §3.3). Must divide the bottleneck width."""
    pta_alpha_init: float = 1.0
    """Initial value of the learnable fusion factor alpha (Eq. 4; the paper gives none)."""
    pta_zero_up: bool = True
    """Zero-initialise PTA's Up projection so the adapter starts as a zero branch (AIM /
    ST-Adapter convention; the paper gives no initialisation)."""
    spg: bool = False
    """Self-Prompt Generator (omniclip §3.2, Eq. 6): K/4 pooled prompt tokens per frame,
    concatenated to the tokens before the first block (§3.1: V^0 = Concat(V^0, R^0))."""
    spg_pool: str = "avg"
    """avg | max 2x2 pooling of the patch grid (omniclip Table 9: Avg. best)."""
    spg_projector: bool = True
    """Two-layer MLP projector on the pooled prompts (omniclip Eq. 6, Table 9: "+ Projector")."""
    spg_hidden: int = 0
    """Hidden width of the SPG projector; 0 = the ViT width (the paper does not say)."""
    spg_per_layer: bool = False
    """Regenerate the prompts from the current patch tokens before every later block with its
    own projector (reading §3.2's R^i as per-layer); off = §3.1, prompts made once from V^0 and
    carried through the blocks."""
    omni_temporal: bool = False
    """Video feature F_V = Avg(MHA(frame features)) (omniclip Eq. 5): an MHA refiner before the
    frame-mean pool. Part of the full OmniCLIP; the paper never ablates it separately."""
    omni_heads: int = 8
    """Heads of the Eq. 5 MHA (not given in the paper; 8 = 64-wide heads for D=512)."""
    omni_residual: bool = True
    """Eq. 5 MHA as F + MHA(LN(F)) with a zero-initialised output projection (starts as CLIP's
    frame features); false = MHA(LN(F)) as Eq. 5 is written."""
    omni_te: bool = True
    """Learnable temporal encoding TE added to the tokens of frame t (omniclip Eq. 1) whenever
    pta, spg or omni_temporal is on; the only source of frame order in OmniCLIP."""
    omni_te_std: float = 0.02
    """Init std of TE (the paper gives none; ViT/TimeSformer convention 0.02; 0 = identity)."""

    @property
    def uses_imu(self) -> bool:
        """True when the IMU branch is built (a module consumes f_IMU)."""
        return self.sirm or self.sgam


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
    std of top-1/top-5 over those splits (xclip Table 5, motionprompt Table 5: K400 ->
    HMDB51/UCF101, three splits)."""
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
    """IMU samples per video frame (the STFT input is T * imu_rate samples, cut to the sampled
    frames)."""
    num_distractors: int = 1
    """Synthetic: distractor objects per clip."""
    seed: int = 0
    """Seed of the synthetic generator (fixed across trials so every row sees the same data)."""

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
    """decord | pyav | auto (decord where it has a wheel, else PyAV)."""
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
    """Training augmentation: multi-scale crop, flip, colour jitter, grayscale (X-CLIP §4.1
    and its TSN-style pipeline). Off for the embedded default; the real presets turn it on."""
    aug_flip: float = 0.5
    """Probability of a horizontal flip of the whole clip."""
    aug_color_jitter: float = 0.8
    """Probability of ColorJitter(0.4, 0.4, 0.2, 0.1) (X-CLIP's training pipeline)."""
    aug_grayscale: float = 0.2
    """Probability of converting the clip to grayscale (X-CLIP's training pipeline)."""
    mixup: float = 0.0
    """Mixup alpha (X-CLIP §4.1: 0.8); 0 = off. Targets become soft, label smoothing applies."""
    cutmix: float = 0.0
    """CutMix alpha (X-CLIP §4.1: 1.0); 0 = off. With ``mixup`` too, one is drawn per batch."""

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
    """Training examples per class drawn from the train split (xclip Table 6, motionprompt
    Table 4: 2/4/8/16); 0 = every example."""
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
    """Clips sampled along time per video (X-CLIP §4.1 multi-view: 4 clips; 1 = single view)."""
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
    adam_beta1: float = 0.9
    """Adam/AdamW beta1 (torch default; omniclip Table 1: 0.9)."""
    adam_beta2: float = 0.999
    """Adam/AdamW beta2 (torch default; omniclip Table 1: 0.98)."""
    lr_schedule: str = "constant"
    """constant | cosine over the epochs after the warm-up (isclip names no schedule:
    constant)."""
    warmup_epochs: int = 0
    """Linear warm-up: epoch e < W trains at (e+1)/(W+1) of the learning rate, then the schedule
    runs over the remaining epochs; a run shorter than the warm-up ends inside it (omniclip
    Table 1: 5; the other papers name none: 0)."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine schedule as a fraction of the learning rate (omniclip Table 1:
    minimal learning rate 2e-5 for 2e-3, i.e. 0.01)."""
    label_smoothing: float = 0.0
    seed: int = 0
    num_workers: int = 1
    """Ray Train workers (DDP); 0 runs the loop in-process (Ray Train local mode)."""
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

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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
        _validate_data(m, d, t, self.eval)
        if d.protocol not in PROTOCOLS:
            raise ConfigError(f"data.protocol must be one of {PROTOCOLS}, got {d.protocol!r}")
        if d.protocol == "base_novel" and not 1 <= d.base_classes < d.num_classes:
            raise ConfigError(
                f"data.base_classes={d.base_classes} must be in [1, data.num_classes-1="
                f"{d.num_classes - 1}] so that both base and novel classes exist"
            )
        if m.uses_imu and d.num_frames * d.imu_rate < m.stft_n_fft:
            raise ConfigError(
                f"model.stft_n_fft={m.stft_n_fft} is longer than the IMU clip "
                f"(data.num_frames*data.imu_rate={d.num_frames * d.imu_rate})"
            )
        for name in ("batch_size", "checkpoint_every", "eval_batch_size", "eval_every"):
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
        sections = {"model": ModelConfig, "data": DataConfig, "trainer": TrainConfig,
                    "eval": EvalConfig}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; "
                              f"expected {sorted(sections)}")
        built = {name: _build(kind, {} if raw.get(name) is None else raw[name], f"{where}.{name}")
                 for name, kind in sections.items()}
        return cls(**built)


OPTIMIZERS = ("adam", "adamw", "sgd")
PROTOCOLS = ("base_novel", "closed_set", "cross_dataset")

POOL_TOGGLES = ("sgam", "mmb")
"""Toggles that each replace the frame->video pool; at most one may be on."""
HEAD_TOGGLES = ("align", "linear_head")
"""Toggles that each replace the cosine head; at most one may be on."""
TEXT_TOGGLES = ("map", "learnable_ctx", "st_aug")
"""Toggles that each replace the hand-crafted text prompts; at most one may be on."""


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
SAMPLINGS = ("sparse", "dense")
DECODERS = ("auto", "decord", "pyav")
DATA_PATH_FIELDS = ("train_manifest", "test_manifest", "class_names_file", "video_root",
                    "k_shot_file", "cross_class_names_file")
"""DataConfig fields that hold paths (made absolute before trials leave the driver)."""


def _validate_data(m: ModelConfig, d: DataConfig, t: TrainConfig, e: EvalConfig) -> None:
    """Sampling, loading, k-shot and dataset-file knobs; files are checked to exist (their
    content is checked by the runner's pre-flight, ``vidablate.data.preflight``)."""
    from pathlib import Path

    from .backbone import image_size_of

    native = image_size_of(m.backbone)
    if native is not None and d.image_size != native:
        raise ConfigError(f"data.image_size={d.image_size} but model.backbone={m.backbone!r} takes "
                          f"{native}x{native} frames; set data.image_size={native}")
    if d.sampling not in SAMPLINGS:
        raise ConfigError(f"data.sampling must be one of {SAMPLINGS}, got {d.sampling!r}")
    if d.decoder not in DECODERS:
        raise ConfigError(f"data.decoder must be one of {DECODERS}, got {d.decoder!r}")
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


def _validate_stage_conflicts(m: ModelConfig) -> None:
    """Modules that claim the same stage of the pipeline cannot be combined."""
    for stage, names in (("frame->video pool", POOL_TOGGLES), ("head", HEAD_TOGGLES),
                         ("text prompts", TEXT_TOGGLES)):
        on = [n for n in names if getattr(m, n, False)]
        if len(on) > 1:
            raise ConfigError(
                f"model.{' and model.'.join(on)} both replace the {stage}; turn one off")


def _validate_xclip(m: ModelConfig, d: DataConfig) -> None:
    """X-CLIP knobs (xclip §3) and the Table 8/9 baselines."""
    from .backbone import parse_block_spec
    from .modules.xclip import backbone_dims, ctx_fits

    for name in ("mit_depth", "vprompt_layers", "learnable_ctx_length"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    for name in ("cct_heads", "mit_heads", "vprompt_heads"):
        if getattr(m, name) < 0:
            raise ConfigError(f"model.{name} must be >= 0 (0 = the official default)")
    if m.prompt_ensemble:
        other = [n for n in TEXT_TOGGLES if getattr(m, n, False)]
        if other:
            raise ConfigError(f"model.prompt_ensemble averages hand-crafted templates, but "
                              f"model.{other[0]} replaces them; turn one off")
    if m.linear_head:
        protocol = getattr(d, "protocol", "base_novel")
        if protocol != "closed_set":
            raise ConfigError(
                f"model.linear_head classifies a fixed set of classes and cannot score unseen "
                f"ones: it needs data.protocol='closed_set', not {protocol!r} (xclip Table 8)")
        if m.linear_head_classes != d.num_classes:
            raise ConfigError(f"model.linear_head_classes={m.linear_head_classes} must equal "
                              f"data.num_classes={d.num_classes}")
        textual = [n for n in ("video_prompt", "prompt_ensemble", "train_text", *TEXT_TOGGLES)
                   if getattr(m, n, False)]
        if textual:
            raise ConfigError(f"model.linear_head has no text branch, so model.{textual[0]} "
                              "has nothing to act on; turn one off")
    dims = backbone_dims(m.backbone)
    if dims is not None:
        if m.cct:
            try:
                parse_block_spec(m.cct_blocks, dims["depth"])
            except ValueError as err:
                raise ConfigError(f"model.cct_blocks: {err}") from None
            if m.cct_heads and dims["width"] % m.cct_heads:
                raise ConfigError(f"model.cct_heads={m.cct_heads} must divide the ViT width "
                                  f"{dims['width']} of model.backbone={m.backbone!r}")
        for toggle, heads in (("mit", "mit_heads"), ("video_prompt", "vprompt_heads")):
            h = getattr(m, heads)
            if getattr(m, toggle) and h and dims["dim"] % h:
                raise ConfigError(f"model.{heads}={h} must divide the embedding width "
                                  f"{dims['dim']} of model.backbone={m.backbone!r}")
        if m.learnable_ctx and not ctx_fits(m.learnable_ctx_length, dims["context_length"]):
            raise ConfigError(
                f"model.learnable_ctx_length={m.learnable_ctx_length} leaves no room for the "
                f"class name in the text context ({dims['context_length']} tokens) of "
                f"model.backbone={m.backbone!r}")


def _validate_motionprompt(m: ModelConfig, d: DataConfig) -> None:
    """MotionPrompt knobs (motionprompt §3): MMB, MAP, MCB."""
    from .modules.motionprompt import ACTIVATIONS, MCB_VIDEO

    if m.mmb_spatial_only and not m.mmb:
        raise ConfigError("model.mmb_spatial_only drops MMB's motion stream (the paper's "
                          "Baseline) and needs model.mmb on")
    if (m.mmb or m.map) and not 1 <= m.mmb_step <= d.num_frames - 1:
        raise ConfigError(f"model.mmb_step={m.mmb_step} must satisfy 1 <= s <= "
                          f"data.num_frames-1 = {d.num_frames - 1} (motionprompt §3.2)")
    for name in ("mmb_motion_layers", "mmb_spatial_layers", "mmb_heads", "map_length",
                 "mcb_heads"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.mmb_mlp_ratio <= 0 or not 0.0 <= m.mmb_dropout < 1.0:
        raise ConfigError("model.mmb_mlp_ratio must be > 0 and 0 <= model.mmb_dropout < 1")
    if m.map_hidden < 0:
        raise ConfigError(f"model.map_hidden must be >= 0 (0 = D // 16), got {m.map_hidden}")
    if m.map_activation not in ACTIVATIONS:
        raise ConfigError(f"model.map_activation must be one of {sorted(ACTIVATIONS)}, "
                          f"got {m.map_activation!r}")
    if m.map and m.map_init and len(m.map_init.split()) < m.map_length:
        raise ConfigError(f"model.map_init={m.map_init!r} has fewer words than "
                          f"model.map_length={m.map_length}")
    if m.mcb_video not in MCB_VIDEO:
        raise ConfigError(f"model.mcb_video must be one of {MCB_VIDEO}, got {m.mcb_video!r}")
    from .backbone import embed_dim_of

    dim = embed_dim_of(m.backbone)
    for toggle, heads in (("mmb", "mmb_heads"), ("mcb", "mcb_heads")):
        if getattr(m, toggle) and dim is not None and dim % getattr(m, heads):
            raise ConfigError(f"model.{heads}={getattr(m, heads)} must divide the embedding "
                              f"width {dim} of model.backbone={m.backbone!r}")


def _validate_stdd(m: ModelConfig, d: DataConfig) -> None:
    """STDD knobs (stdd §3): STCA geometry against the backbone, adaptation, prompt file."""
    from .backbone import parse_block_spec
    from .modules import stdd

    for name, allowed in (("wsm_train_phase", stdd.WSM_TRAIN_PHASES),
                          ("mcm_mode", stdd.MCM_MODES), ("stca_shortcut", stdd.STCA_SHORTCUTS),
                          ("stca_query", stdd.STCA_QUERIES),
                          ("stdd_adaptation", stdd.ADAPTATIONS),
                          ("align_prompt_sets", stdd.PROMPT_SETS)):
        if getattr(m, name) not in allowed:
            raise ConfigError(f"model.{name} must be one of {allowed}, got {getattr(m, name)!r}")
    if m.wsm_w1 < 1 or m.wsm_w2 < 1:
        raise ConfigError(f"model.wsm_w1 and model.wsm_w2 must be >= 1, got "
                          f"{m.wsm_w1}x{m.wsm_w2}")
    if not 0 <= m.wsm_ratio < 1:
        raise ConfigError(f"model.wsm_ratio must be in [0, 1), got {m.wsm_ratio}")
    if not 0 < m.mcm_gamma <= 0.5:
        raise ConfigError(f"model.mcm_gamma must be in (0, 0.5] (2*gamma*D channels are mixed), "
                          f"got {m.mcm_gamma}")
    if m.stdd_prompt_len < 1 or m.stdd_prompt_hidden < 0:
        raise ConfigError("model.stdd_prompt_len must be >= 1 and model.stdd_prompt_hidden >= 0")
    try:
        scales = stdd.parse_scales(m.mcm_scales)
    except ValueError as err:
        raise ConfigError(f"model.mcm_scales: {err}") from None
    shape = stdd.vision_shape(m.backbone)
    if m.stca:
        window = (m.wsm_w1, m.wsm_w2)
        if m.wsm and stdd.masked_per_window(window, m.wsm_ratio) == 0:
            raise ConfigError(
                f"model.wsm_ratio={m.wsm_ratio} masks no token of a {m.wsm_w1}x{m.wsm_w2} window; "
                "raise it or turn model.wsm off")
        if m.mcm and max(scales) >= d.num_frames:
            raise ConfigError(f"model.mcm_scales={m.mcm_scales!r}: every scale must be below "
                              f"data.num_frames={d.num_frames}")
        if shape:
            try:
                parse_block_spec(m.stca_blocks, shape["depth"])
            except ValueError as err:
                raise ConfigError(f"model.stca_blocks: {err} (model.backbone={m.backbone!r})"
                                  ) from None
            gh, gw = shape["grid_h"], shape["grid_w"]
            if m.wsm and (gh % m.wsm_w1 or gw % m.wsm_w2):
                raise ConfigError(
                    f"model.wsm_w1 x model.wsm_w2 = {m.wsm_w1}x{m.wsm_w2} windows do not tile the "
                    f"{gh}x{gw} patch grid of model.backbone={m.backbone!r}")
            channels = stdd.mixed_channels(shape["width"], m.mcm_gamma)
            need = max(scales) if m.mcm_mode == "continual" else 1
            if m.mcm and channels < need:
                raise ConfigError(
                    f"model.mcm_gamma={m.mcm_gamma} mixes {channels} channel(s) of the ViT width "
                    f"{shape['width']} per side; model.mcm_mode={m.mcm_mode!r} at scale "
                    f"{max(scales)} needs >= {need}")
    if m.stdd_adaptation == "prompt" and getattr(m, "cct", False):
        raise ConfigError("model.stdd_adaptation='prompt' and model.cct both add per-block "
                          "message tokens; turn one off")
    if m.align:
        pools = [n for n in POOL_TOGGLES if getattr(m, n, False)]
        if pools:
            raise ConfigError(f"model.align scores frames against prompts without pooling "
                              f"(stdd Eq. 8), so model.{pools[0]} would be ignored; turn one off")
        per_video = [n for n in ("video_prompt", "map", "mcb") if getattr(m, n, False)]
        if per_video:
            raise ConfigError(f"model.align needs class-level text ([C, D] or [C, K, D]); "
                              f"model.{per_video[0]} makes it per video; turn one off")
    if m.st_aug:
        try:
            prompts = stdd.load_prompt_sets(m.align_prompt_file, m.align_prompt_sets)
        except stdd.PromptFileError as err:
            raise ConfigError(f"model.align_prompt_file: {err}") from None
        if d.dataset == "synthetic" and 2 <= d.num_classes <= 32:
            from .data.synthetic import class_names

            missing = stdd.missing_classes(prompts, class_names(d.num_classes))
            if missing:
                raise ConfigError(
                    f"model.align_prompt_file={m.align_prompt_file or str(stdd.DEFAULT_PROMPT_FILE)!r}"
                    f" has no prompts for class(es) {missing}")


def _validate_omniclip(m: ModelConfig, d: DataConfig) -> None:
    """OmniCLIP knobs (omniclip §3)."""
    from .modules.omniclip import (
        PAPER_DEPTH,
        PTA_MODES,
        SPG_POOLS,
        parse_blocks,
        vision_shape_of,
    )

    if not 0 < m.pta_ratio <= 1:
        raise ConfigError(f"model.pta_ratio must be in (0, 1] (Table 8: 1/8 .. 1), "
                          f"got {m.pta_ratio}")
    if m.pta_mode not in PTA_MODES:
        raise ConfigError(f"model.pta_mode must be one of {PTA_MODES}, got {m.pta_mode!r}")
    if m.pta_blocks_depth < 0 or m.pta_heads < 0 or m.spg_hidden < 0:
        raise ConfigError("model.pta_blocks_depth, model.pta_heads and model.spg_hidden must be "
                          ">= 0 (0 = the backbone's value)")
    if m.pta_zero_up and m.pta_alpha_init == 0:
        raise ConfigError("model.pta_alpha_init=0 with model.pta_zero_up=true: neither alpha nor "
                          "the Up projection would get a gradient; change one of them")
    if m.spg_pool not in SPG_POOLS:
        raise ConfigError(f"model.spg_pool must be one of {SPG_POOLS}, got {m.spg_pool!r}")
    if m.omni_heads < 1 or m.omni_te_std < 0:
        raise ConfigError("model.omni_heads must be >= 1 and model.omni_te_std >= 0")
    shape = vision_shape_of(m.backbone)
    if m.pta:
        depth = shape[0] if shape else PAPER_DEPTH  # unknown config: assume ViT-B
        try:
            parse_blocks(m.pta_blocks, depth, m.pta_blocks_depth)
        except ValueError as err:
            raise ConfigError(f"model.pta_blocks={m.pta_blocks!r} (model.pta_blocks_depth="
                              f"{m.pta_blocks_depth}, model.backbone={m.backbone!r} has {depth} "
                              f"blocks): {err}") from None
        if shape:
            width, heads = shape[1], m.pta_heads or shape[2]
            hidden = round(width * m.pta_ratio)
            if hidden < 1 or hidden % heads:
                raise ConfigError(
                    f"model.pta_ratio={m.pta_ratio} gives a bottleneck of {hidden} channels "
                    f"(ViT width {width}), which model.pta_heads={heads} must divide")
    if m.omni_temporal:
        from .backbone import embed_dim_of

        dim = embed_dim_of(m.backbone)
        if dim is not None and dim % m.omni_heads:
            raise ConfigError(f"model.omni_heads={m.omni_heads} must divide the embedding width "
                              f"{dim} of model.backbone={m.backbone!r}")


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
