"""PNG charts of a run record: jaxplain / limit and peer / jaxplain per case, and the
scaling sweeps."""

from __future__ import annotations

from pathlib import Path


def ratio_chart(record: dict, path: Path) -> Path | None:
    results = record.get("results", [])
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['case']} ({r['model']})" for r in results]
    lim = [r["ratios"].get("jaxplain/limit") or 0.0 for r in results]
    groups = sorted({g for r in results for g in r.get("best_peer", {})})
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.35 * len(results) + 1.8), sharey=True)
    y = list(range(len(results)))
    axes[0].barh(y, lim, color="tab:blue", label="vs one-batch limit")
    chunked = [(yy, r["ratios"].get("jaxplain/limit_chunked")) for yy, r in zip(y, results)]
    chunked = [(yy, v) for yy, v in chunked if v]
    if chunked:
        axes[0].plot(
            [v for _, v in chunked],
            [yy for yy, _ in chunked],
            "D",
            color="tab:orange",
            markersize=5,
            label="vs chunked limit",
        )
    axes[0].axvline(1.0, color="k", lw=0.8)
    axes[0].axvline(1.1, color="tab:red", lw=0.8, ls="--")
    axes[0].set_title("jaxplain time / physical limit (goal ≤ 1.1)")
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].invert_yaxis()
    colors = {g: plt.cm.tab20(i % 20) for i, g in enumerate(groups)}
    labelled: set[str] = set()
    for yy, r in zip(y, results):
        mine = [g for g in groups if r["ratios"].get(f"{g}:best/jaxplain")]
        h = 0.8 / max(1, len(mine))
        for i, g in enumerate(mine):
            axes[1].barh(
                yy - 0.4 + h * (i + 0.5),
                r["ratios"][f"{g}:best/jaxplain"],
                height=h,
                color=colors[g],
                label=None if g in labelled else g,
            )
            labelled.add(g)
    axes[1].axvline(1.0, color="k", lw=0.8)
    _log_ticks(axes[1])
    axes[1].set_title("peer (best setting) time / jaxplain time (>1: jaxplain faster)")
    handles, names = [], []
    for ax in axes:  # one legend below both panels, clear of the bars
        h, n = ax.get_legend_handles_labels()
        handles, names = handles + h, names + n
    rows = -(-len(names) // 6) if names else 0
    if names:
        fig.legend(handles, names, loc="lower center", ncol=min(6, len(names)), fontsize=7,
                   frameon=False)
    fig.tight_layout(rect=(0, (0.16 * rows + 0.15 * bool(rows)) / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling_chart(record: dict, path: Path) -> Path | None:
    rows = record.get("scaling", [])
    sweeps = [s for s in ("steps", "batch_size", "n_samples") if any(r["sweep"] == s for r in rows)]
    if not sweeps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.4))
    axes = [axes] if len(sweeps) == 1 else list(axes)
    for ax, s in zip(axes, sweeps):
        rs = [r for r in rows if r["sweep"] == s]
        xs = [r["value"] for r in rs]
        ax.plot(xs, [1000 * r["median_s"] for r in rs], "o-", color="tab:blue")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{s} ({rs[0]['method']})")
        ax.set_ylabel("median ms", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(xs, [r.get("xla_mb") or 0 for r in rs], "s--", color="tab:orange")
        ax2.set_ylabel("XLA MB", color="tab:orange")
        ax2.set_ylim(bottom=0)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_ticks(ax) -> None:
    """A log axis labelled at 1, 2 and 5 of each decade as plain ratios (`0.5×`, `2×`, `10×`)."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
