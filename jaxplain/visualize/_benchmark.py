"""Benchmark charts from the JSON records of benchmarks/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence


def _benchmark_records(results: Any) -> list[dict]:
    if isinstance(results, (str, Path)):
        p = Path(results)
        if p.is_dir():
            recs = []
            for f in sorted(p.glob("*.json")):
                recs += _benchmark_records(json.loads(f.read_text()))
            return recs
        return _benchmark_records(json.loads(p.read_text()))
    if isinstance(results, Mapping):
        for key in ("results", "records", "rows", "runs"):
            if key in results and isinstance(results[key], list):
                return [dict(r) for r in results[key]]
        return [dict(results)]
    return [dict(r) for r in results]


def _pick(rec: Mapping, names: Sequence[str], default=None):
    for n in names:
        if n in rec and rec[n] is not None:
            return rec[n]
    return default


def _nested_rows(r: Mapping, metric: str) -> list[tuple]:
    """Rows of one record of benchmarks/harness.py: jaxplain, the best config per peer library."""
    label = str(_pick(r, ["case", "method", "name"], "?"))
    lim = (r.get("limit") or {}).get(metric)
    rows = []
    t = r["jaxplain"].get(metric)
    if t is not None:
        rows.append((label, "jaxplain", float(t), lim))
    best: dict[str, float] = {}
    for name, timing in (r.get("peers") or {}).items():
        v = (timing or {}).get(metric) if isinstance(timing, Mapping) else None
        if v is not None:
            lib = name.split("[", 1)[0].split(".", 1)[0]
            best[lib] = min(best.get(lib, float("inf")), float(v))
    rows += [(label, lib, v, lim) for lib, v in best.items()]
    return rows


def plot_benchmark(
    results: Any, *, metric: str | None = None, log: bool = True, title: str | None = None
):
    """Bar chart of benchmark timings: one group per method, one bar per library.

    Args:
      results: a path to a JSON file (or a folder of them) from `benchmarks/results`,
        a dict with a `"results"` list, or a list of records. Records of the
        harness (`{"case", "jaxplain": {"median_s"}, "limit": {...}, "peers": {...}}`)
        give one bar for jaxplain and one per peer library (its best configuration).
        A flat record names its
        method (`method`), its implementation (`library`/`impl`/`framework`) and a
        time (`seconds`/`time_s`/`median_s`/`steady_s`/`time`), optionally the
        physical limit (`limit_s`/`physical_limit_s`) drawn as a black tick.
      metric: the record field to plot (default: the first time field found).
      log: logarithmic y axis.

    Returns:
      The Figure with one axes.
    """
    from matplotlib.figure import Figure

    recs = _benchmark_records(results)
    time_keys = (
        [metric] if metric else ["steady_s", "median_s", "seconds", "time_s", "time", "mean_s"]
    )
    rows = []
    for r in recs:
        if isinstance(r.get("jaxplain"), Mapping):  # the harness's nested layout
            rows += _nested_rows(r, metric or "median_s")
            continue
        t = _pick(r, time_keys)
        if t is None:
            continue
        rows.append(
            (
                str(_pick(r, ["method", "name"], "?")),
                str(_pick(r, ["library", "impl", "framework", "backend"], "jaxplain")),
                float(t),
                _pick(r, ["limit_s", "physical_limit_s", "limit"]),
            )
        )
    if not rows:
        raise ValueError(f"results: found no timing field among {time_keys} in {len(recs)} records")
    methods = list(dict.fromkeys(r[0] for r in rows))
    libs = list(dict.fromkeys(r[1] for r in rows))
    fig = Figure(
        figsize=(max(5.0, 0.9 * len(methods) * max(1, len(libs)) ** 0.5 + 2), 3.6),
        layout="constrained",
    )
    ax = fig.add_subplot()
    width = 0.8 / len(libs)
    for j, lib in enumerate(libs):
        xs, ys = [], []
        for r in rows:
            if r[1] == lib:
                xs.append(methods.index(r[0]) + (j - (len(libs) - 1) / 2) * width)
                ys.append(r[2])
        ax.bar(xs, ys, width * 0.95, label=lib)
    lim = [(methods.index(r[0]), float(r[3])) for r in rows if r[3] is not None]
    for i, (x, v) in enumerate(dict(lim).items()):
        ax.plot(
            [x - 0.45, x + 0.45],
            [v, v],
            color="k",
            lw=1.5,
            label="physical limit" if i == 0 else None,
        )
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(time_keys[0] if metric else "time")
    if log:
        _log_time_axis(ax, seconds=not metric or metric.endswith("_s"))
    ax.grid(axis="y", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()  # below the axes: never over a bar
    fig.legend(handles, names, loc="outside lower center", ncol=min(5, len(names)), fontsize=8,
               frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def time_label(v: float) -> str:
    """A time in seconds as a short label: `500 µs`, `20 ms`, `1.5 s`."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(v) >= scale or unit == "ns":
            return f"{v / scale:g} {unit}"
    return f"{v:g}"  # pragma: no cover


def _log_time_axis(ax, seconds: bool) -> None:
    """A log y axis labelled at 1, 2 and 5 of each decade, as times when `seconds`."""
    from matplotlib import ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    fmt = time_label if seconds else (lambda v: f"{v:g}")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt(float(f"{v:.3g}"))))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
