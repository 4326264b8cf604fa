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


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
