"""Architecture as data: one reader of an open_clip backbone config, and the papers' block specs.

``vision_spec(name)`` reads the model's JSON config (open_clip's own ``model_configs`` folder and
this package's, e.g. ``vidablate-tiny``) without importing open_clip or torch, so validation and
pre-flight can check a toggle against the backbone's depth, width, heads, patch grid, embedding
width and text context cheaply. Missing keys take open_clip's ``VisionCfg`` / ``TextCfg``
defaults (ViT-B: 12 layers, width 768, 64-wide heads, 16 px patches, 224 px images; text context
77, 12 layers). This module imports nothing of the package.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_CONFIG_DIR = Path(__file__).parent / "model_configs"
"""The project's open_clip configs (``vidablate-tiny``), registered with open_clip on use."""

_registered = False

QUICK_GELU_TAGS = frozenset({
    "openai", "yfcc15m", "cc12m", "dfn2b", "dfn5b", "metaclip_400m", "metaclip_fullcc",
    "metaclip2_worldwide", "laion400m_e31", "laion400m_e32",
})
"""open_clip weight tags trained with QuickGELU (x * sigmoid(1.702 x)), as open_clip's
pretrained table marks them (``quick_gelu=True``; checked by a test). OpenAI CLIP and the
official X-CLIP use QuickGELU; a config without it builds ``nn.GELU``, which differs by up to
0.02 per activation, and open_clip only warns."""


@dataclass(frozen=True)
class VisionSpec:
    """What the papers' modules and their validation need to know of a CLS-token ViT CLIP."""

    name: str
    depth: int
    """Visual transformer blocks."""
    width: int
    """Token width W of the visual transformer."""
    heads: int
    """Attention heads of a visual block (width // head_width)."""
    patch_size: int
    image_size: tuple[int, int]
    embed_dim: int
    """Joint image-text embedding width D (the visual projection's output)."""
    context_length: int
    """Text tokens the text tower reads (SOS and EOT included)."""
    text_layers: int
    text_width: int
    quick_gelu: bool
    """The config builds QuickGELU activations (OpenAI CLIP's); False = nn.GELU."""

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, columns)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def grid_h(self) -> int:
        return self.grid[0]

    @property
    def grid_w(self) -> int:
        return self.grid[1]

    @property
    def square_image_size(self) -> int | None:
        """The input resolution when it is square, else None."""
        h, w = self.image_size
        return h if h == w else None


def _config_dirs() -> list[Path]:
    dirs = [PROJECT_CONFIG_DIR]
    found = importlib.util.find_spec("open_clip")
    for location in (found.submodule_search_locations or []) if found else []:
        dirs.append(Path(location) / "model_configs")
    return dirs


@functools.lru_cache(maxsize=256)
def _file_config(name: str) -> dict[str, Any] | None:
    for folder in _config_dirs():
        path = folder / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def model_config(name: str) -> dict[str, Any] | None:
    """The open_clip config of ``name`` (a copy), or None when no config file defines it. A
    config added to an already imported open_clip (``open_clip.add_model_config``) is found too."""
    cfg = _file_config(name)
    if cfg is None and "open_clip" in sys.modules:
        register_model_configs()
        cfg = sys.modules["open_clip"].get_model_config(name)
    return json.loads(json.dumps(cfg)) if cfg is not None else None


def vision_spec(name: str) -> VisionSpec | None:
    """The backbone's shape, or None when the model is unknown or not a ViT (ResNet or timm
    towers, whose ``layers`` is a list or which name a timm model)."""
    cfg = model_config(name)
    if not cfg or not isinstance(cfg.get("vision_cfg"), dict):
        return None
    vision, text = cfg["vision_cfg"], cfg.get("text_cfg") or {}
    layers = vision.get("layers", 12)
    if not isinstance(layers, int) or vision.get("timm_model_name"):
        return None
    width = int(vision.get("width", 768))
    size = vision.get("image_size", 224)
    size = tuple(int(s) for s in size) if isinstance(size, (list, tuple)) else (int(size),) * 2
    return VisionSpec(
        name=name, depth=layers, width=width,
        heads=max(width // int(vision.get("head_width", 64)), 1),
        patch_size=int(vision.get("patch_size", 16)), image_size=size,
        embed_dim=int(cfg.get("embed_dim", width)),
        context_length=int(text.get("context_length", 77)),
        text_layers=int(text.get("layers", 12)), text_width=int(text.get("width", 512)),
        quick_gelu=bool(cfg.get("quick_gelu", False)))


def weights_need_quick_gelu(pretrained: str | None) -> bool | None:
    """True when ``pretrained`` is an open_clip tag of QuickGELU weights; None when that cannot
    be told without open_clip (no weights, a local file, another tag: ``load_clip`` checks
    those against open_clip's table when it loads them)."""
    if pretrained and pretrained in QUICK_GELU_TAGS:
        return True
    return None


def register_model_configs() -> None:
    """Register the project's open_clip configs (``vidablate-tiny``) once per process."""
    global _registered
    if not _registered:
        import open_clip  # deferred: the spec readers above run without torch

        open_clip.add_model_config(PROJECT_CONFIG_DIR)
        _registered = True


def parse_block_spec(spec: str, depth: int, ref_depth: int = 0) -> list[int]:
    """Blocks named the papers' way, 1-based and inclusive (``all``, ``1-12``, ``1,3,5``,
    ``1-3,10``) -> sorted 0-based indices of a ``depth``-block tower.

    ``ref_depth=0`` numbers the tower's own blocks. ``ref_depth>0`` numbers the blocks of a
    reference tower of that depth (a paper's ViT-B/16: 12) and maps them proportionally onto
    this one: reference blocks a..b cover blocks floor((a-1)*depth/ref)+1 .. ceil(b*depth/ref),
    the identity when the depths agree. Raises ValueError naming the bad part.
    """
    if depth < 1:
        raise ValueError(f"the tower has no blocks (depth={depth})")
    if ref_depth < 0:
        raise ValueError(f"reference depth must be >= 0, got {ref_depth}")
    ref = ref_depth or depth
    text = str(spec).strip().lower()
    if text == "all":
        return list(range(depth))
    items = [s.strip() for s in text.split(",")]
    if not any(items):
        raise ValueError(f"block spec {spec!r} names no block; use 'all', '1-12' or '1,3,5'")
    out: set[int] = set()
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ValueError(f"bad block spec {item!r} in {spec!r}: use 'all', '1-12' or "
                             "'1,3,5' (1-based)") from None
        if not 1 <= first <= last <= ref:
            which = (f"the {ref}-block reference numbering" if ref_depth
                     else f"the backbone's {depth} blocks")
            raise ValueError(f"blocks {item!r} in {spec!r} must satisfy 1 <= first <= last <= "
                             f"{ref} (1-based, in {which})")
        out.update(range((first - 1) * depth // ref, -(-last * depth // ref)))
    return sorted(out)
