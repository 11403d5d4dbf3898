"""The table as a bar plot: per metric, the paper's and our change against the reference row
(our bars with the std over seed pairs), or the absolute values when the space has no
reference row."""

from __future__ import annotations

from pathlib import Path

from .table import TableRow, TableSpace


def plot(space: TableSpace, table: list[TableRow], path: str | Path) -> Path:
    """Grouped bars (paper vs ours, std as error bars), one subplot per metric, saved as PNG.

    Uses the Agg canvas on a bare ``Figure`` rather than pyplot, so it works headless and never
    switches the backend or touches pyplot's global figure state of the calling process.
    """
    # matplotlib takes ~0.5 s to import and only the plot needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    effects = any(r.reference for r in table)
    rows = [r for r in table if not r.reference] if effects else table
    metrics = list(space.metrics.items())
    labels = [r.label for r in rows]
    width_in = max(4.0, 0.6 * len(rows) + 1.5)
    fig = Figure(figsize=(width_in * len(metrics), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    rotate = len(rows) > 4 or any(len(s) > 10 for s in labels)
    xs = list(range(len(rows)))
    bar = 0.38
    for ax, (metric, column) in zip(axes, metrics, strict=True):
        paper: list[tuple[int, float]] = []
        ours: list[tuple[int, float, float]] = []
        for x, row in zip(xs, rows, strict=True):
            cell = row.cells[metric]
            if effects:
                if cell.paper_effect is not None:
                    paper.append((x, cell.paper_effect))
                if cell.effect is not None and cell.effect.mean is not None:
                    ours.append((x, cell.effect.mean, cell.effect.std or 0.0))
            else:
                if cell.paper is not None:
                    paper.append((x, cell.paper))
                if cell.mean is not None:
                    ours.append((x, cell.mean, cell.std or 0.0))
        if paper:
            ax.bar([x - bar / 2 for x, _ in paper], [v for _, v in paper], bar,
                   label="paper", color="#9e9e9e")
        if ours:
            ax.bar([x + bar / 2 for x, _, _ in ours], [v for _, v, _ in ours], bar,
                   label="ours", color="#1f77b4")
            spread = [(x, v, s) for x, v, s in ours if s > 0]
            if spread:
                ax.errorbar([x + bar / 2 for x, _, _ in spread], [v for _, v, _ in spread],
                            yerr=[s for _, _, s in spread], fmt="none", ecolor="black", capsize=3)
        values = [v for _, v in paper] + [v + d for _, v, s in ours for d in (-s, s)]
        if values:
            low, high = min(values), max(values)
            pad = max(1.0, 0.08 * (max(high, 0.0) - min(low, 0.0)))
            # bars start at zero so that their heights compare honestly
            ax.set_ylim(min(0.0, low - pad), max(0.0, high + pad))
        if effects:
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{column}: change vs reference" if effects else column)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=30 if rotate else 0,
                           ha="right" if rotate else "center", rotation_mode="anchor")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(space.title or space.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
