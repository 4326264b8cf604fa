"""matplotlib figures of a bench run, written as PNG files (docs/benchmarks/ holds the committed ones).

Each function draws one figure from a results dictionary and returns the path it wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after the backend is chosen

HIT_RATE_BIN_SECONDS = 5.0


def peers_latency_cdf(peers: dict[str, Any], path: Path) -> Path:
    """The replay's latency distribution of each peer (log scale: hits and computations differ by 1000x)."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, p in peers.items():
        values = sorted(ms for _, ms, _ in p["replay"]["series"])
        if values:
            ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests answered within")
    ax.set_title("Dashboard replay: latency CDF per peer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def peers_hit_rate(peers: dict[str, Any], path: Path) -> Path:
    """The replay's hit rate over time per peer, in bins of HIT_RATE_BIN_SECONDS of requests started; a dotted line
    marks when the peer's invalidation of the changed day returned."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, p in peers.items():
        series = p["replay"]["series"]
        if not series:
            continue
        bins: dict[int, list[int]] = {}
        for started, _, hit in series:
            bins.setdefault(int(started // HIT_RATE_BIN_SECONDS), []).append(hit)
        xs = sorted(bins)
        (line,) = ax.plot(
            [(b + 0.5) * HIT_RATE_BIN_SECONDS for b in xs],
            [100 * sum(bins[b]) / len(bins[b]) for b in xs],
            marker=".",
            label=name,
        )
        if p["replay"].get("invalidatedAt") is not None:
            ax.axvline(p["replay"]["invalidatedAt"], color=line.get_color(), linestyle=":", alpha=0.8)
    ax.set_xlabel(f"seconds since the replay started (bins of {HIT_RATE_BIN_SECONDS:.0f} s)")
    ax.set_ylabel("hit rate (%)")
    ax.set_ylim(-5, 105)
    ax.set_title("Dashboard replay: hit rate over time per peer (one day invalidated midway)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def soak_memory(result: dict[str, Any], path: Path) -> Path:
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
    return _save(figure, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
