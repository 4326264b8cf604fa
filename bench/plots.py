"""The benchmarks' PNG plots (matplotlib, no display needed): each function draws one figure from a run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, whatever the environment says

import matplotlib.pyplot as plt  # after the backend is chosen


def soak_memory(result: dict[str, Any], path: Path) -> None:
    """The soak (bench/soak.py): RSS of the API and of the operator, and Redis used_memory, each second, one panel
    each, with the fitted lines over their windows, the warm-up shaded and the Redis restart marked."""
    columns = result["samples"]["columns"]
    rows = result["samples"]["rows"]
    minutes = [row[0] / 60 for row in rows]
    panels = (
        ("api", "apiRssMiB", "HTTP API RSS"),
        ("operator", "operatorRssMiB", "operator RSS"),
        ("redis", "redisUsedMemoryMiB", "Redis used_memory"),
    )
    figure, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(9, 8), constrained_layout=True)
    restart = result["redisRestart"]
    for ax, (series, column, title) in zip(axes, panels, strict=True):
        index = columns.index(column)
        ax.plot(minutes, [row[index] for row in rows], linewidth=0.8, label="sampled (1 s)")
        for fit in (f for f in result["fits"] if f["series"] == series):
            start, end = fit["startSeconds"], min(fit["endSeconds"], rows[-1][0])
            line = [fit["interceptMiB"] + fit["mibPerHour"] * s / 3600 for s in (start, end)]
            ax.plot(
                [start / 60, end / 60],
                line,
                linestyle="--",
                linewidth=1.6,
                label=f"fit, {fit['window']}: {fit['mibPer24h']:+.1f} MiB/24 h",
            )
        ax.axvspan(0, result["warmupSeconds"] / 60, color="grey", alpha=0.15, label="warm-up (not fitted)")
        ax.axvspan(restart["downAt"] / 60, restart["upAt"] / 60, color="red", alpha=0.25, label="Redis restart")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("MiB")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("minutes into the soak")
    figure.suptitle(
        f"Soak, {result['minutes']:g} minutes (commit {result['engine']['commit']}): memory and fitted slopes",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
