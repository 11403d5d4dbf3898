"""Synthetic egocentric video + IMU dataset shaped like UESTC-MMEA-CL.

It is the embedded default dataset: every test and the laptop demo use it, so it is generated
deterministically from a seed with vectorised numpy (the default train split takes well under
a second). Each class is a compositional phrase "<colour> <shape> <motion>" with 4 objects x 8
motions = 32 classes, and the generator plants what each IS-CLIP module should find:

* Time reversal: the 8 motions form 4 reversal pairs (left/right, up/down, growing/shrinking,
  clockwise/counterclockwise). A clip of one member played backwards is distributed exactly
  like a clip of the other (window, motion profile, distractor and background distributions
  are all symmetric under t -> T-1-t), so averaging per-frame features over time cannot
  separate a pair; only temporal modelling can.
* Active window: the action fills a random sub-window (at least ~40% of the clip); outside it
  the object is still. The IMU (the wearer's hand moves the object) is derived analytically
  from the object's motion, so IMU energy marks the active frames: acc x/y = image-plane
  acceleration, acc z = depth acceleration implied by the scale change, gyro x/y = small
  wrist tilt proportional to the translation velocity, gyro z = orbit angular velocity
  (counterclockwise on screen positive); plus -1 g gravity on acc y, a per-clip gain in
  [0.9, 1.1] and Gaussian noise (``spec.noise``, in g and rad/s).
* Clutter: grey/white distractor blobs move independently (not in the IMU) over a mildly
  textured, noisy, per-clip random background.

Class order (the zero-shot protocol takes the first 16 or 24 classes as base, the rest as
novel): a class "unit" is one object with one reversal pair (2 classes, kept adjacent so a pair
never straddles an even split). Units are ordered as a Latin square: units 0-3 pair object o
with pair o, units 4-7 with pair (o+1) % 4, units 8-11 with (o+2) % 4, units 12-15 with
(o+3) % 4. Hence the first 16 (and first 24) classes contain every object word and every
motion word, novel classes are unseen combinations of seen words, and both members of every
reversal pair sit in the same partition for both the 16/16 and the 24/8 split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .clips import item_rng, pack
from .video import CLIP_MEAN, CLIP_STD

OBJECTS: tuple[str, ...] = ("red square", "green circle", "blue triangle", "yellow cross")
OBJECT_COLOURS = np.array(
    [[220, 40, 40], [40, 200, 60], [50, 90, 235], [235, 215, 40]], dtype=np.float32
)
REVERSAL_PAIRS: tuple[tuple[str, str], ...] = (
    ("moving left", "moving right"),
    ("moving up", "moving down"),
    ("growing", "shrinking"),
    ("turning clockwise", "turning counterclockwise"),
)
MOTIONS: tuple[str, ...] = tuple(m for pair in REVERSAL_PAIRS for m in pair)

# Physical units of the clip: frame period, width of the imaged scene and depth of the object.
FRAME_DT = 0.125  # seconds per video frame
SCENE_WIDTH_M = 0.5  # metres spanned by the image width
OBJECT_DEPTH_M = 0.4  # metres from camera to the object
GRAVITY = 9.81
TILT_GAIN = 0.5  # rad/s of wrist tilt (gyro x/y) per image-width/s of translation
_SPLIT_IDS = {"train": 0, "test": 1}
DISTRACTOR_STYLES = ("blob", "object")
OBJECT_DISTRACTOR_SCALE = 2.0  # object distractors: twice a grey disc's radius


def _class_table() -> list[tuple[int, int]]:
    """Return (object index, motion index) for the 32 classes in protocol order."""
    table = []
    for shift in range(4):
        for obj in range(4):
            pair = (obj + shift) % 4
            table += [(obj, 2 * pair), (obj, 2 * pair + 1)]
    return table


_CLASS_TABLE = _class_table()


def class_names(num_classes: int = 32) -> list[str]:
    """Return the first ``num_classes`` class phrases in protocol order (see module doc)."""
    if not 2 <= num_classes <= 32:
        raise ValueError(f"num_classes must be in 2..32, got {num_classes}")
    return [f"{OBJECTS[o]} {MOTIONS[m]}" for o, m in _CLASS_TABLE[:num_classes]]


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and randomness knobs of the synthetic dataset; validated on construction."""

    num_classes: int = 32
    train_per_class: int = 24  # clips per class in the train split
    test_per_class: int = 8  # clips per class in the test split
    num_frames: int = 8  # T
    image_size: int = 32  # H = W
    imu_rate: int = 16  # IMU samples per video frame
    num_distractors: int = 1
    noise: float = 0.05  # IMU noise std (in units of g; same number in rad/s for the gyro)
    seed: int = 0
    # Mechanism variants (each isolates one claimed mechanism; all off = the embedded default,
    # bit-identical to a generator without them):
    outside_object: bool = False
    """Frames outside the IMU-active window show another object (a different colour and shape,
    drawn per clip) where the still object would be: the frame mean is diluted by a distracting
    object, a weighting by the IMU's activity can leave it out (isclip §II-D, SGAM)."""
    distractor_style: str = "blob"
    """``blob``: grey discs; ``object``: each distractor is another object (colour and shape of
    one of the other three) at twice a disc's size, larger than the labelled object, moving
    over the whole clip and absent from the IMU (isclip §II-C, Fig. 1(a), SIRM)."""
    object_scale_range: float = 1.0
    """s >= 1: the labelled object's size is multiplied by a per-clip factor log-uniform in
    [1/s, s] (objects at different scales, omniclip §3.2, SPG); 1 = off."""

    def __post_init__(self) -> None:
        minima = {
            "num_classes": 2, "train_per_class": 1, "test_per_class": 1, "num_frames": 2,
            "image_size": 16, "imu_rate": 1, "num_distractors": 0, "seed": 0,
        }  # fmt: skip
        for name, low in minima.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if self.num_classes > 32:
            raise ValueError(f"num_classes must be <= 32, got {self.num_classes}")
        if isinstance(self.noise, bool) or not isinstance(self.noise, int | float):
            raise ValueError(f"noise must be a float, got {self.noise!r}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise must be finite and >= 0, got {self.noise}")
        if self.distractor_style not in DISTRACTOR_STYLES:
            raise ValueError(f"distractor_style must be one of {DISTRACTOR_STYLES}, got "
                             f"{self.distractor_style!r}")
        if not (math.isfinite(self.object_scale_range) and self.object_scale_range >= 1.0):
            raise ValueError(f"object_scale_range must be >= 1, got {self.object_scale_range}")


def _motion_profile(tau: np.ndarray, start: np.ndarray, length: np.ndarray):
    """Smooth 0->1 progress p and its time derivatives at times ``tau`` (frame units).

    The motion spans [start - 0.5, end + 0.5]; p(1 - u) = 1 - p(u), so the profile is
    symmetric under time reversal.
    """
    L = length[:, None].astype(np.float64)
    u = (tau[None, :] - (start[:, None] - 0.5)) / L
    inside = (u > 0) & (u < 1)
    u = np.clip(u, 0.0, 1.0)
    p = 0.5 * (1.0 - np.cos(np.pi * u))
    dp = np.where(inside, np.pi / (2 * L) * np.sin(np.pi * u), 0.0)
    ddp = np.where(inside, np.pi**2 / (2 * L**2) * np.cos(np.pi * u), 0.0)
    return p, dp, ddp


def _object_mask(obj: int, rx: np.ndarray, ry: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Filled shape ``obj`` in object-centred (rotated) coordinates with half-extent ``r``."""
    ax, ay = np.abs(rx), np.abs(ry)
    if obj == 0:  # square
        return (ax <= 0.85 * r) & (ay <= 0.85 * r)
    if obj == 1:  # circle
        return rx**2 + ry**2 <= r**2
    if obj == 2:  # triangle, apex up (image y points down)
        return (ry >= -r) & (ry <= 0.8 * r) & (ax <= 0.62 * (ry + r))
    arm = 0.35 * r  # cross
    return ((ax <= r) & (ay <= arm)) | ((ay <= r) & (ax <= arm))


def _object_distractors(frames: np.ndarray, rng: np.random.Generator, obj: np.ndarray,
                        dx: np.ndarray, dy: np.ndarray, radius: np.ndarray, gx: np.ndarray,
                        gy: np.ndarray) -> np.ndarray:
    """Draw one distractor per clip that is another object (``distractor_style="object"``):
    centres dx, dy [n, T], half-extent radius [n]."""
    n = len(obj)
    other = (obj + rng.integers(1, len(OBJECTS), n)) % len(OBJECTS)
    colour = (OBJECT_COLOURS[other] + rng.uniform(-15, 15, (n, 3))).astype(np.float32)
    for o in range(len(OBJECTS)):
        idx = np.flatnonzero(other == o)
        if idx.size == 0:
            continue
        mask = _object_mask(o, gx - dx[idx, :, None, None], gy - dy[idx, :, None, None],
                            radius[idx, None, None, None])
        frames[idx] = np.where(mask[..., None], colour[idx, None, None, None, :], frames[idx])
    return frames


def generate_split(spec: SyntheticSpec, split: str) -> dict[str, np.ndarray]:
    """Generate one split deterministically from (spec, split).

    Returns video uint8 [N, T, H, W, 3], imu float32 [N, 6, T*imu_rate] (acc xyz in g,
    gyro xyz in rad/s), label int64 [N] and window int64 [N, 2] (first and last active frame,
    inclusive). Train and test use different derived seeds.
    """
    data = _generate(spec, split)
    del data["centre"], data["scale"]
    return data


def generate_split_with_tracks(spec: SyntheticSpec, split: str) -> dict[str, np.ndarray]:
    """``generate_split`` (identical arrays) plus the labelled object's per-frame track.

    Adds centre float32 [N, T, 2] (x, y of the object centre as fractions of the image width
    and height, origin top-left, y down) and scale float32 [N, T] (object half-extent as a
    fraction of the image width). Used to caption frames for pretraining (DESIGN §4).
    """
    return _generate(spec, split)


def _split_rng(spec: SyntheticSpec, split: str) -> np.random.Generator:
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_IDS)}")
    return np.random.default_rng(np.random.SeedSequence([spec.seed, 0x51D, _SPLIT_IDS[split]]))


def _draw_labels(spec: SyntheticSpec, split: str, rng: np.random.Generator) -> np.ndarray:
    """The split's labels: the generator's first draw."""
    per_class = spec.train_per_class if split == "train" else spec.test_per_class
    return rng.permutation(np.repeat(np.arange(spec.num_classes, dtype=np.int64), per_class))


def split_labels(spec: SyntheticSpec, split: str) -> np.ndarray:
    """The labels ``generate_split`` gives, without rendering a frame (the first draw of the
    same generator)."""
    return _draw_labels(spec, split, _split_rng(spec, split))


def _generate(spec: SyntheticSpec, split: str) -> dict[str, np.ndarray]:
    """The generator behind ``generate_split``; also returns the object track."""
    rng = _split_rng(spec, split)
    C, T, S = spec.num_classes, spec.num_frames, spec.image_size
    label = _draw_labels(spec, split, rng)
    n = len(label)
    table = np.array(_CLASS_TABLE[:C])
    obj, motion = table[label, 0], table[label, 1]

    # Active window: length uniform in [L_min, T], start uniform (symmetric under reversal).
    min_len = min(T, max(2, math.ceil(0.4 * T)))
    length = rng.integers(min_len, T + 1, size=n)
    start = (rng.random(n) * (T - length + 1)).astype(np.int64)
    window = np.stack([start, start + length - 1], axis=1)

    # Per-clip motion parameters; every clip draws every parameter so classes are alike.
    u = rng.random((n, 8))
    disp = 0.35 + 0.2 * u[:, 0]  # translation distance (image widths)
    cx = 0.2 + disp / 2 + u[:, 1] * (0.6 - disp)  # path centre along the motion axis
    cy = 0.25 + 0.5 * u[:, 2]  # position across the motion axis
    centre = 0.4 + 0.2 * u[:, 1:3]  # scale / orbit centre for growing, shrinking, turning
    radius = 0.09 + 0.05 * u[:, 3]  # object half-extent (geometric mid-size when scaling)
    log_k = np.log(1.8 + 0.8 * u[:, 4])  # total log scale change for growing/shrinking
    theta_c = 2 * np.pi * u[:, 5]
    sweep = np.pi * (0.75 + 0.5 * u[:, 6])  # orbit angle covered while turning
    orbit = 0.17 + 0.06 * u[:, 7]
    sign = np.where(motion % 2 == 0, -1.0, 1.0)  # first pair member moves "negatively"
    kind = motion // 2
    zeros = np.zeros(n)
    trans = kind < 2
    along = np.where(trans, cx - sign * disp / 2, centre[:, 0])
    across = np.where(trans, cy, centre[:, 1])
    a_trans = np.where(trans, sign * disp, 0.0)
    x0 = np.where(kind == 1, across, along)
    y0 = np.where(kind == 1, along, across)
    ax_ = np.where(kind == 0, a_trans, zeros)
    ay_ = np.where(kind == 1, a_trans, zeros)
    grow = kind == 2
    a_sig = np.where(grow, -sign * log_k, 0.0)  # growing: +log_k, shrinking: -log_k
    r0 = np.where(grow, radius * np.exp(-a_sig / 2), radius)
    if spec.object_scale_range > 1.0:
        spread = math.log(spec.object_scale_range)
        r0 = r0 * np.exp(rng.uniform(-spread, spread, n))
    turn = kind == 3
    R = np.where(turn, orbit, 0.0)
    a_th = np.where(turn, -sign * sweep, 0.0)  # clockwise on screen = increasing angle
    th0 = theta_c - a_th / 2

    def trajectory(tau: np.ndarray):
        p, dp, ddp = _motion_profile(tau, start, length)
        th = th0[:, None] + a_th[:, None] * p
        cos, sin, w = np.cos(th), np.sin(th), a_th[:, None] * dp
        Rr, ath = R[:, None], a_th[:, None]
        pos = (x0[:, None] + ax_[:, None] * p + Rr * cos, y0[:, None] + ay_[:, None] * p + Rr * sin)
        vel = (ax_[:, None] * dp - Rr * sin * w, ay_[:, None] * dp + Rr * cos * w)
        acc = (
            ax_[:, None] * ddp - Rr * (cos * w**2 + sin * ath * ddp),
            ay_[:, None] * ddp + Rr * (cos * ath * ddp - sin * w**2),
        )
        return p, th, pos, vel, acc, w, a_sig[:, None] * ddp

    # ---- video -------------------------------------------------------------------------
    p, th, (px, py), *_ = trajectory(np.arange(T, dtype=np.float64))
    size = (r0[:, None] * np.exp(a_sig[:, None] * p))[..., None, None]
    rot = np.where(turn[:, None], th, 0.0)[..., None, None]  # turning shapes spin with the orbit
    grid = (np.arange(S) + 0.5) / S
    gx, gy = grid[None, None, None, :], grid[None, None, :, None]

    fx, fy = rng.uniform(1, 4, (2, n, 2))
    phase, amp = rng.uniform(0, 2 * np.pi, (n, 2)), rng.uniform(4, 16, (n, 2))
    arg = fx[..., None, None] * gx[0] + fy[..., None, None] * gy[0]  # [n, 2, S, S]
    texture = (amp[..., None, None] * np.sin(2 * np.pi * arg + phase[..., None, None])).sum(1)
    base = rng.uniform(20, 80, (n, 1, 1, 3)) + texture[..., None]
    frames = np.broadcast_to(base[:, None], (n, T, S, S, 3)).astype(np.float32)

    for _ in range(spec.num_distractors):
        d_c = rng.uniform(0.25, 0.75, (n, 2))
        d_ang, d_len = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.2, 0.5, n)
        d_r, grey = rng.uniform(0.06, 0.1, n), rng.uniform(150, 255, n).astype(np.float32)
        step = np.linspace(-0.5, 0.5, T)[None, :] * d_len[:, None]
        dx = np.clip(d_c[:, :1] + step * np.cos(d_ang)[:, None], 0.1, 0.9)
        dy = np.clip(d_c[:, 1:] + step * np.sin(d_ang)[:, None], 0.1, 0.9)
        if spec.distractor_style == "object":
            frames = _object_distractors(frames, rng, obj, dx, dy, OBJECT_DISTRACTOR_SCALE * d_r,
                                         gx, gy)
            continue
        mask = (gx - dx[..., None, None]) ** 2 + (gy - dy[..., None, None]) ** 2
        mask = mask <= d_r[:, None, None, None] ** 2
        frames = np.where(mask[..., None], grey[:, None, None, None, None], frames)

    jitter = rng.uniform(-15, 15, (n, 3))
    shown = np.repeat(obj[:, None], T, axis=1)  # the object drawn in each frame
    if spec.outside_object:
        other = (obj + rng.integers(1, len(OBJECTS), n)) % len(OBJECTS)
        t = np.arange(T)[None, :]
        outside = (t < window[:, :1]) | (t > window[:, 1:])
        shown = np.where(outside, other[:, None], shown)
    colour = (OBJECT_COLOURS[shown] + jitter[:, None, :]).astype(np.float32)  # [n, T, 3]
    for o in range(len(OBJECTS)):
        drawn = shown == o
        idx = np.flatnonzero(drawn.any(axis=1))
        if idx.size == 0:
            continue
        dx, dy = gx - px[idx, :, None, None], gy - py[idx, :, None, None]
        c, s = np.cos(rot[idx]), np.sin(rot[idx])
        mask = _object_mask(o, c * dx + s * dy, -s * dx + c * dy, size[idx])
        mask &= drawn[idx][..., None, None]
        frames[idx] = np.where(mask[..., None], colour[idx, :, None, None, :], frames[idx])

    frames += rng.uniform(2, 8, (n, 1, 1, 1, 1)).astype(np.float32) * rng.standard_normal(
        frames.shape, dtype=np.float32
    )
    video = np.clip(np.rint(frames), 0, 255).astype(np.uint8)

    # ---- IMU ---------------------------------------------------------------------------
    r = spec.imu_rate
    tau = np.arange(T * r) / r - 0.5 + 0.5 / r  # frame t's samples cover [t-0.5, t+0.5)
    *_, (vx, vy), (accx, accy), w, dd_logs = trajectory(tau)
    to_g = SCENE_WIDTH_M / FRAME_DT**2 / GRAVITY
    imu = np.stack(
        [
            accx * to_g,
            accy * to_g - 1.0,  # gravity along image-down
            -dd_logs * OBJECT_DEPTH_M / FRAME_DT**2 / GRAVITY,  # growing = approaching camera
            -TILT_GAIN * vy / FRAME_DT,
            TILT_GAIN * vx / FRAME_DT,
            -w / FRAME_DT,  # counterclockwise on screen is positive
        ],
        axis=1,
    )
    gain = rng.uniform(0.9, 1.1, (n, 1, 1))
    imu = gain * imu + spec.noise * rng.standard_normal(imu.shape)
    return {
        "video": video,
        "imu": imu.astype(np.float32),
        "label": label,
        "window": window.astype(np.int64),
        "centre": np.stack([px, py], axis=-1).astype(np.float32),
        "scale": size[..., 0, 0].astype(np.float32),
    }


class SyntheticVideoIMU(Dataset):
    """Torch dataset over one generated split, optionally restricted to some classes.

    Items are {"video": float32 [T, 3, H, W] CLIP-normalised, "imu": float32 [6, T*imu_rate],
    "label": int64 scalar tensor (global class id), "index": int (position in this dataset),
    "valid": True}. With a ``sampling`` (``vidablate.data.clips.ClipSampling``) the T model
    frames are sampled from the ``spec.num_frames`` rendered ones, augmented when training,
    or cut into evaluation views ([V, T, 3, H, W]); the IMU is cut to the sampled frames.
    """

    def __init__(
        self, spec: SyntheticSpec, split: str, classes: Sequence[int] | None = None,
        sampling: Any = None,
    ) -> None:
        self.spec = spec
        self.split = split
        self.class_names = class_names(spec.num_classes)
        labels = split_labels(spec, split)
        keep = np.arange(len(labels))
        if classes is not None:
            wanted = np.asarray(list(classes), dtype=np.int64)
            bad = wanted[(wanted < 0) | (wanted >= spec.num_classes)]
            if bad.size:
                raise ValueError(f"classes out of range 0..{spec.num_classes - 1}: {bad.tolist()}")
            keep = np.flatnonzero(np.isin(labels, wanted))
        self.indices = keep  # rows of the generated split
        self.labels = labels[keep]
        self._rendered: dict[str, Any] | None = None
        self.sampling = None if _is_identity(sampling, spec) else sampling
        self._mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)

    def _render(self) -> dict[str, Any]:
        """The split's frames, IMU and windows, rendered on first use: a plan or a dry run
        needs only the labels and the size."""
        if self._rendered is None:
            data, keep = generate_split(self.spec, self.split), self.indices
            self._rendered = {"video": data["video"][keep],
                              "imu": torch.from_numpy(data["imu"][keep]),
                              "window": data["window"][keep]}
        return self._rendered

    @property
    def video(self) -> np.ndarray:
        """uint8 [N, T, H, W, 3]."""
        return self._render()["video"]

    @property
    def imu(self) -> torch.Tensor:
        """float32 [N, 6, T*imu_rate]."""
        return self._render()["imu"]

    @property
    def windows(self) -> np.ndarray:
        """int64 [N, 2]: first and last active frame."""
        return self._render()["window"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> dict:
        if self.sampling is not None:
            return self._sampled(idx)
        frames = torch.from_numpy(self.video[idx]).permute(0, 3, 1, 2).float().div_(255.0)
        return {
            "video": (frames - self._mean) / self._std,
            "imu": self.imu[idx],
            "label": torch.tensor(int(self.labels[idx]), dtype=torch.int64),
            "index": int(idx),
            "valid": True,
        }

    def _sampled(self, idx: int) -> dict:
        s = self.sampling
        views = s.indices(self.spec.num_frames, rng=item_rng())
        video = s.pixels([self.video[idx][v] for v in views])
        full, r = self.imu[idx].numpy(), self.spec.imu_rate
        if s.imu_span == "frames":
            per_frame = full.reshape(6, self.spec.num_frames, r)
            imu = [per_frame[:, v].reshape(6, -1) for v in views]
        else:  # sample k of frame t sits at t + (k + 0.5) / r frames (converters.export_synthetic)
            source = (np.arange(full.shape[1], dtype=np.float64) + 0.5) / r
            length = s.num_frames * r
            imu = []
            for v in views:
                a, b = s.span(v, 0, self.spec.num_frames - 1)
                times = a + (np.arange(length, dtype=np.float64) + 0.5) * ((b - a) / length)
                imu.append(np.stack([np.interp(times, source, ch) for ch in full]))
        return pack(s, video, imu, int(self.labels[idx]), int(idx))


def _is_identity(sampling: Any, spec: SyntheticSpec) -> bool:
    """True when sampling would feed every rendered frame once, unaugmented, in one view."""
    if sampling is None:
        return True
    augment = sampling.augment is not None and sampling.augment.enabled
    return (sampling.num_frames == spec.num_frames and sampling.image_size == spec.image_size
            and sampling.views == 1 and not augment
            and (sampling.mode == "sparse" or sampling.rate == 1))
