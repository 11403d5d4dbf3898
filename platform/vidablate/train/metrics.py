"""Zero-shot metrics: base / novel accuracy and their harmonic mean (isclip Table I)."""

from __future__ import annotations


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2·B·N / (B + N); 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)
