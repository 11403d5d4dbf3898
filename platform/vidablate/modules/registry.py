"""The papers, in composer order: ``build_model`` runs their build steps in this order (IS-CLIP's
SIRM is the first frame refiner, then X-CLIP's MIT, then OmniCLIP's temporal MHA) and config
validation runs their checks. Adding a paper: one file in ``modules/`` and one line here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..stages import Paper
from . import isclip, motionprompt, omniclip, stdd, xclip

PAPERS: list[Paper] = [
    isclip.PAPER,
    xclip.PAPER,
    motionprompt.PAPER,
    stdd.PAPER,
    omniclip.PAPER,
]


def papers() -> list[Paper]:
    """The registered papers in composer order."""
    return list(PAPERS)


@contextmanager
def registered(paper: Paper) -> Iterator[Paper]:
    """Register ``paper`` (last in composer order) for the duration, e.g. a toy paper in a test;
    the composed ``ModelConfig`` (``vidablate.config.model_config_class``) then has its knobs."""
    if any(p.name == paper.name for p in PAPERS):
        raise ValueError(f"a paper named {paper.name!r} is already registered")
    PAPERS.append(paper)
    try:
        yield paper
    finally:
        PAPERS.remove(paper)
