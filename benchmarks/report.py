"""Markdown tables, PNG charts and the README section, all generated from the JSON record."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import harness as H

BENCH_START = "<!-- bench:start -->"
BENCH_END = "<!-- bench:end -->"


def _ms(t: dict | None) -> str:
    if not t or t.get("median_s") is None:
        return "—" if not t or "error" not in t else "error"
    return f"{1000 * t['median_s']:.1f}"


def _x(r: float | None, digits: int = 2) -> str:
    return "—" if r is None else f"{r:.{digits}f}×"


def _mb(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def _config(name: str) -> str:
    return name.split("[", 1)[1].rstrip("]") if "[" in name else ""


def peer_summary(res: dict) -> str:
    """`captum.Lime 1.4× best (perturbations_per_eval=250), 7.0× default` for each peer."""
    parts = []
    for g, best in sorted(res.get("best_peer", {}).items()):
        rb = res["ratios"].get(f"{g}:best/jaxplain")
        rd = res["ratios"].get(f"{g}:default/jaxplain")
        s = f"{g} {_x(rb)}"
        cfg = _config(best)
        if rd is not None and cfg and not H.is_default(best):
            s += f" best ({cfg}), {_x(rd)} default"
        elif cfg:
            s += f" ({cfg})"
        parts.append(s)
    errors = [k for k, v in res.get("peers", {}).items() if "error" in v]
    if errors:
        parts.append("failed: " + ", ".join(errors))
    return "; ".join(parts) if parts else "—"


def one_line(res: dict) -> str:
    r = res["ratios"]
    return (
        f"jaxplain {_ms(res['jaxplain'])} ms, limit {_ms(res['limit'])} ms, "
        f"jaxplain/limit {_x(r.get('jaxplain/limit'))}, compile {res['jaxplain'].get('compile_s', 0):.2f} s; "
        f"peers/jaxplain: {peer_summary(res)}"
    )


def informational(a: dict) -> bool:
    """An agreement check reported but not judged (a peer known to differ by design or by a
    bug of its own, or records from before the node-by-node IG check)."""
    return bool(a.get("informational", False))


def _agreement_cell(res: dict) -> str:
    checks = res.get("agreement") or []
    if not checks:
        return "—"
    out = []
    for a in checks:
        if "error" in a:
            out.append(f"error: {a['error'][:60]}")
        else:
            mark = (
                "~"
                if informational({**a, "model": res.get("model")})
                else ("✓" if a["pass"] else "✗")
            )
            out.append(f"{mark} {a['rel_err']:.1e}")
    return ", ".join(out)


def main_table(record: dict) -> str:
    lines = [
        "| method | model | images | model evals | jaxplain ms | limit ms | jaxplain / limit "
        "| first call s (compile s) | peer time / jaxplain time | agreement (rel. err) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for res in record.get("results", []):
        j = res["jaxplain"]
        first = f"{j.get('first_s', 0):.2f} ({j.get('compile_s', 0):.2f})"
        rc = res["ratios"].get("jaxplain/limit_chunked")
        extra = []
        if rc is not None:
            extra.append(f"{_x(rc)} chunked")
        rd = res["ratios"].get("jaxplain/limit_dispatch")
        if rd is not None:
            extra.append(f"{_x(rd)} dispatch {res['limit_dispatch'].get('batch')}")
        rp = res["ratios"].get("program/limit")
        if rp is not None:
            extra.append(f"program {_x(rp)}")
        chunked = f" ({', '.join(extra)})" if extra else ""
        lines.append(
            f"| `{res['case']}` | {res['model']} | {res['n_images']} | {res['n_evals']} ({res['kind']}) "
            f"| {_ms(j)} | {_ms(res['limit'])} | **{_x(res['ratios'].get('jaxplain/limit'))}**{chunked} "
            f"| {first} | {peer_summary(res)} | {_agreement_cell(res)} |"
        )
    return "\n".join(lines)


def memory_table(record: dict) -> str:
    lines = [
        "| method | model | jaxplain XLA MB | limit XLA MB | jaxplain RSS+ MB | limit RSS+ MB "
        "| best peer RSS+ MB |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for res in record.get("results", []):
        peers = ", ".join(
            f"{g}: {_mb(res['peers'][n].get('rss_peak_mb'))}"
            for g, n in sorted(res.get("best_peer", {}).items())
        )
        lines.append(
            f"| `{res['case']}` | {res['model']} | {_mb(res['jaxplain'].get('xla_mb'))} "
            f"| {_mb(res['limit'].get('xla_mb'))} | {_mb(res['jaxplain'].get('rss_peak_mb'))} "
            f"| {_mb(res['limit'].get('rss_peak_mb'))} | {peers or '—'} |"
        )
    return "\n".join(lines)


def agreement_table(record: dict) -> str:
    rows = [a for a in record.get("agreement", []) if "rel_err" in a]
    if not rows:
        return "_no agreement checks ran (peers missing?)_"
    lines = [
        "| check | model | vs | max rel. error | tolerance | pass |",
        "|---|---|---|---:|---:|---|",
    ]
    n_info, max_kinks, n_layer = 0, None, 0
    for a in rows:
        note = " (Captum weights rescaled by (n-1)/n)" if a.get("rescaled") else ""
        if informational(a):
            verdict = "n/a (reported only)"
        else:
            verdict = "yes" if a["pass"] else "**no**"
        if a.get("kink_nodes") is not None:
            n_info, max_kinks = n_info + 1, a.get("max_kink_nodes")
            verdict += (
                f" ({a['kink_nodes']} of {a.get('steps', '?')} path nodes differ; the other "
                f"nodes {a['rel_err_other_nodes']:.1e})"
            )
        if a.get("off_images") is not None:
            n_layer += 1
            again = a.get("rel_err_off_images_other_nodes")
            verdict += (
                f" ({a['off_images']} image(s) off, the others {a['rel_err_other_images']:.1e}"
                + (f"; on steps + 1 nodes {again:.1e}" if again is not None else "")
                + ")"
            )
        lines.append(
            f"| `{a['check']}`{note} | {a.get('model', '')} | {a['vs']} | {a['rel_err']:.2e} "
            f"| {a['tol']:.0e} | {verdict} |"
        )
    if n_info:
        lines.append(
            "\nAn IG check above tolerance is examined node by node: where a ReLU input or a "
            "max-pool window's runner-up lies within float32 rounding of the threshold, XLA and "
            "PyTorch can round to different sides and that path node's gradient jumps (a "
            "discontinuity of the model's gradient, not of the methods; on the large avg-pool "
            "model one ReLU input was +2.2e-8 in XLA and -1.5e-8 in PyTorch). It passes when at most "
            f"{max_kinks} nodes disagree and the sums over the other nodes agree within "
            "the tolerance."
        )
    if n_layer:
        lines.append(
            "\nA layer-method check above tolerance is examined image by image: a path node "
            "whose ReLU input lies within rounding of 0 can take different sides in XLA and "
            "PyTorch. It passes when at most one image is off, the others agree, and that image "
            "agrees when both sides run it on one more path node (other nodes, no kink)."
        )
    return "\n".join(lines)


def efficiency_table(record: dict) -> str:
    rows = [r for r in record.get("sample_efficiency", []) if r.get("budget") is not None]
    if not rows:
        return "_sample-efficiency table not run_"
    names = sorted({r["estimator"] for r in rows}, key=lambda n: (not n.startswith("jaxplain"), n))
    budgets = sorted({r["budget"] for r in rows})
    cell = {(r["estimator"], r["budget"]): r for r in rows}
    lines = ["| evaluations | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for b in budgets:
        vals = []
        for n in names:
            r = cell.get((n, b))
            vals.append("—" if r is None else f"{r['rmse_rel']:.3f} ({r['n_evals']})")
        lines.append(f"| ~{b} | " + " | ".join(vals) + " |")
    text = "\n".join(lines)
    ratios = efficiency_ratios(record)
    spread = ratio_intervals(record)
    if ratios:
        text += "\n\n" + "\n".join(
            f"- {a} / {b} RMSE at ~{bud} evaluations: {_x(r)}"
            + (
                f" (90% bootstrap over seeds: {spread[(a, b, bud)][0]:.2f}-{spread[(a, b, bud)][1]:.2f})"
                if (a, b, bud) in spread
                else ""
            )
            for (a, b, bud), r in ratios.items()
        )
    exact = [
        r for r in record.get("sample_efficiency", []) if r["estimator"] == "jaxplain.exact_shapley"
    ]
    if exact:
        text += f"\n- `jaxplain.exact_shapley` vs the harness's own enumeration: RMSE {exact[0]['rmse']:.2e}"
    return text


def efficiency_ratios(record: dict) -> dict:
    """jaxplain RMSE / peer RMSE at each budget, for the pairs the issue names."""
    cell = {
        (r["estimator"], r["budget"]): r["rmse"]
        for r in record.get("sample_efficiency", [])
        if r.get("budget") is not None
    }
    pairs = [
        ("jaxplain.shapley_sampling", "captum.ShapleyValueSampling"),
        ("jaxplain.kernel_shap", "shap.KernelExplainer[l1_reg=auto]"),
        ("jaxplain.kernel_shap", "shap.KernelExplainer[l1_reg=False]"),
        ("jaxplain.kernel_shap", "captum.KernelShap"),
    ]
    out = {}
    for a, b in pairs:
        for bud in sorted({k[1] for k in cell}):
            if (a, bud) in cell and (b, bud) in cell and cell[(b, bud)] > 0:
                out[(a, b, bud)] = cell[(a, bud)] / cell[(b, bud)]
    return out


def ratio_intervals(record: dict, n_boot: int = 2000, level: float = 0.9) -> dict:
    """A bootstrap interval of each `efficiency_ratios` ratio, resampling each side's seeds.

    Rows without per-seed errors (`seed_mse`, older records) get no interval.
    """
    mse = {
        (r["estimator"], r["budget"]): np.asarray(r["seed_mse"], np.float64)
        for r in record.get("sample_efficiency", [])
        if r.get("budget") is not None and r.get("seed_mse")
    }
    rng = np.random.default_rng(0)
    out = {}
    for a, b, bud in efficiency_ratios(record):
        if (a, bud) not in mse or (b, bud) not in mse:
            continue
        ea, eb = mse[(a, bud)], mse[(b, bud)]
        ra = ea[rng.integers(0, len(ea), (n_boot, len(ea)))].mean(1)
        rb = eb[rng.integers(0, len(eb), (n_boot, len(eb)))].mean(1)
        ratio = np.sqrt(ra / np.maximum(rb, 1e-300))
        lo, hi = np.quantile(ratio, [(1 - level) / 2, (1 + level) / 2])
        out[(a, b, bud)] = (float(lo), float(hi))
    return out


def scaling_table(record: dict) -> str:
    rows = record.get("scaling", [])
    if not rows:
        return "_scaling sweep not run (full run only)_"
    lines = [
        "| sweep | method | value | model evals | median ms | XLA MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = "—" if r.get("median_s") is None else f"{1000 * r['median_s']:.1f}"
        lines.append(
            f"| {r['sweep']} | `{r['method']}` | {r['value']} | {r['n_evals']} | {ms} "
            f"| {_mb(r.get('xla_mb'))} |"
        )
    mem = {r["value"]: r.get("xla_mb") for r in rows if r["sweep"] == "memory_steps"}
    if mem.get(50) and mem.get(1000):
        lines.append(
            f"\nIG memory growth steps 50 → 1000 at batch_size 256: **{mem[1000] / mem[50]:.2f}×** "
            f"(goal ≤ 1.2×)"
        )
    return "\n".join(lines)


def header(record: dict) -> str:
    m = record.get("machine", {})
    v = {k: x for k, x in m.get("versions", {}).items() if x}
    load = m.get("load_avg_start")
    load_end = m.get("load_avg_end")
    args = record.get("args", {})
    mode = "quick" if args.get("quick") else "full"
    if args.get("passes"):
        rounds = (f"{args.get('repeats')} timed calls each in {args['passes']} passes of blocks,"
                  f" each block after a pause and {args.get('rewarm_s', 0) * 1e3:.0f} ms of"
                  " untimed calls; jaxplain and its references interleaved in one block")
    else:  # records from before the blocks
        rounds = f"{args.get('repeats')} interleaved rounds"
    if args.get("min_timed_s"):
        # records before "extended" gave the extra rounds to jaxplain and its limit only
        who = "every contender" if args.get("extended") == "all" else "jaxplain and its limit"
        cap = f"up to {args.get('max_rounds')}"
        if args.get("peer_max_rounds"):
            cap += f" for jaxplain and its limits, {args['peer_max_rounds']} for peers"
        rounds += (f" ({who}: more when cheap, {cap},"
                   f" for ~{args['min_timed_s']:g} s of timed calls each)")
    missing = [k for k, why in record.get("peers_available", {}).items() if why]
    lines = [
        f"Run {m.get('date_utc', '?')} ({mode}, {rounds}, "
        f"medians; wall {record.get('wall_s') or 0:.0f} s) on {m.get('cpu', '?')}, "
        f"{m.get('cpus_usable', '?')} usable cores, backend {m.get('jax_backend', '?')}; "
        f"load average {load[0]:.1f} at start" + (f", {load_end[0]:.1f} at end" if load_end else "")
        if load
        else "",
        "Versions: "
        + ", ".join(f"{k} {x}" for k, x in v.items())
        + (f"; git {m['git_commit']}" if m.get("git_commit") else ""),
    ]
    opts = m.get("xla_compiler_options")
    if opts is not None:
        shown = ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "none"
        lines.append(
            f"XLA compiler options of jaxplain's programs and of the limits: {shown}"
            + (f"; XLA_FLAGS {m['xla_flags']!r}" if m.get("xla_flags") else "")
        )
    if missing:
        lines.append("Peers not installed: " + ", ".join(missing))
    twins = record.get("twins", {})
    ok = [f"{k} ({t['max_rel_logit_error']:.1e})" for k, t in twins.items() if t.get("verified")]
    if ok:
        lines.append(
            "Twin models verified (max relative logit error, Flax vs PyTorch): " + ", ".join(ok)
        )
    bad = [f"{k}: {t.get('problem')}" for k, t in twins.items() if not t.get("verified")]
    if bad:
        lines.append("Peers not timed on: " + "; ".join(bad))
    return "\n\n".join(l for l in lines if l)


LEGEND = """\
*jaxplain / limit*: jaxplain's steady-state time over the **physical limit**, the same number of
model evaluations (forward, or forward+backward; for Grad-CAM forward + backward to the layer) run
as one jitted batch on inputs already on device, run as jaxplain runs the model (its XLA options,
pooling gradients and first-layer patch products), measured in the same rounds, interleaved with
jaxplain's calls; "(… chunked)" is the
ratio to the same evaluations streamed in chunks of jaxplain's default `batch_size`
(`batching.default_batch_size()`, 64 on CPU), shown when there are more, and "(… dispatch b)" the ratio to the same evaluations run as
separate jitted calls of b inputs (the same default chunk, 64): on CPU, cache-sized batches are often the
fastest way to run them, faster than one huge batch. "(program …)" is the method compiled whole
(as under a caller's `jax.jit`) over the limit: what is left of *jaxplain / limit* beyond it is the
public call's own work per call (argument checks and dispatch, a fraction of a millisecond), which
only shows on calls of a few milliseconds. *peer time / jaxplain
time*: above 1× means jaxplain is faster; each peer at its best setting from a sweep and at its
defaults, with the same inputs and number of model evaluations, on a PyTorch twin with identical
weights. Every side gets its inputs as its own arrays, built once (jaxplain and the limit
`jax.Array`s, Captum torch tensors, shap and lime NumPy). Compile time is the XLA compilation
inside jaxplain's first call."""


def full_markdown(record: dict) -> str:
    skipped = record.get("skipped", [])
    skip = "\n".join(
        f"- {s['case']}{' on ' + s['model'] if s.get('model') else ''}: {s['reason']}"
        for s in skipped
    )
    return (
        "\n\n".join(
            [
                "# jaxplain benchmarks",
                header(record),
                "## Time",
                LEGEND,
                main_table(record),
                "![ratios](ratios.png)",
                "## Peak memory",
                "XLA MB: buffers XLA allocates for the jitted call (temporaries, outputs, arguments). "
                "RSS+ MB: growth of the process's resident memory during one call (a lower bound: "
                "memory freed by earlier calls is reused).",
                memory_table(record),
                "## Agreement with the peers (Captum, Quantus) on identical weights",
                agreement_table(record),
                "## Sample efficiency: relative RMSE vs exact Shapley (d = 12), (model evaluations)",
                efficiency_table(record),
                "## Scaling",
                scaling_table(record),
                "![scaling](scaling.png)",
                "## Skipped",
                skip or "nothing",
            ]
        )
        + "\n"
    )


def readme_section(record: dict, rel_dir: str = "benchmarks/results") -> str:
    lines = [
        "## Benchmarks",
        "",
        "Generated by `python -m benchmarks --update-readme` (`bash run.sh bench`); never edited by hand. "
        'Reproduce with `pip install -e ".[bench]"` then `python -m benchmarks` (full, ≤ 15 min on 2 cores) '
        "or `python -m benchmarks --quick` (~2 min). Full tables (memory, scaling) in "
        f"[`{rel_dir}/table.md`]({rel_dir}/table.md), raw numbers in `{rel_dir}/latest.json`. "
        "To compare sampled Shapley estimators over many seeds without the CNN in the loop, "
        "`python -m benchmarks.games` plays stored games (every coalition's value, computed once).",
        "",
        header(record),
        "",
        LEGEND,
        "",
        main_table(record),
        "",
        f"![ratios]({rel_dir}/ratios.png)",
        "",
        "Agreement with the peers (Captum, Quantus) on identical weights:",
        "",
        agreement_table(record),
        "",
        "Sample efficiency, relative RMSE vs exact Shapley (d = 12) at equal model evaluations:",
        "",
        efficiency_table(record),
    ]
    return "\n".join(lines)


def update_readme(record: dict, readme: Path, rel_dir: str = "benchmarks/results") -> bool:
    """Replaces the text between the bench markers; returns False when the markers are missing."""
    text = readme.read_text()
    pat = re.compile(re.escape(BENCH_START) + r".*?" + re.escape(BENCH_END), re.DOTALL)
    if not pat.search(text):
        return False
    new = f"{BENCH_START}\n{readme_section(record, rel_dir)}\n{BENCH_END}"
    readme.write_text(pat.sub(lambda _: new, text, count=1))
    return True


# ---- plots ----------------------------------------------------------------------------


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
        axes[0].legend(fontsize=6, loc="lower right")
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
    axes[1].set_xscale("log")
    axes[1].set_title("peer (best setting) time / jaxplain time (>1: jaxplain faster)")
    if groups:
        axes[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
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


def write_all(record: dict, out_dir: Path, readme: Path | None = None) -> list[Path]:
    """latest.json, table.md, ratios.png, scaling.png in `out_dir`; the README section if asked."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [H.write_json(record, out_dir / "latest.json")]
    (out_dir / "table.md").write_text(full_markdown(record))
    paths.append(out_dir / "table.md")
    for fn, name in ((ratio_chart, "ratios.png"), (scaling_chart, "scaling.png")):
        p = fn(record, out_dir / name)
        if p is not None:
            paths.append(p)
    if readme is not None:
        try:
            rel = out_dir.resolve().relative_to(readme.resolve().parent).as_posix()
        except ValueError:
            rel = str(out_dir)
        if update_readme(record, readme, rel):
            paths.append(readme)
    return paths
