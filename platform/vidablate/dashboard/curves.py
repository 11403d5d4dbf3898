"""Per-epoch curves of a table: one line per row (mean over its seeds) with a band (min to
max over the seeds), one panel per metric, as a PNG."""

from __future__ import annotations

import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from .collect import Trial  # noqa: E402


def row_curves(trials: list[Trial], metric: str) -> dict[str, tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray, np.ndarray]]:
    """Row -> (epochs, mean, min, max) over the seeds that logged ``metric`` at each epoch."""
    by_row: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        for step, value in t.history.get(metric, []):
            by_row[t.row][step].append(value)
    out = {}
    for row, steps in by_row.items():
        epochs = np.array(sorted(steps))
        values = [np.array(steps[e]) for e in epochs]
        out[row] = (epochs, np.array([v.mean() for v in values]),
                    np.array([v.min() for v in values]), np.array([v.max() for v in values]))
    return out


def curves_png(trials: list[Trial], metrics: dict[str, str], rows: list[str]) -> bytes | None:
    """The panels as PNG bytes (None when no trial logged any of ``metrics``)."""
    panels = [(m, label) for m, label in metrics.items()
              if any(t.history.get(m) for t in trials)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        curves = row_curves(trials, metric)
        for i, row in enumerate(r for r in rows if r in curves):
            epochs, mean, low, high = curves[row]
            ax.plot(epochs, mean, color=colours(i % 10), label=row, linewidth=1.6)
            ax.fill_between(epochs, low, high, color=colours(i % 10), alpha=0.18, linewidth=0)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
