"""The tables of the extras: sample efficiency (with bootstrap intervals of its ratios)
and the scaling sweeps, and the list of registered methods without a benchmark case."""

from __future__ import annotations

import numpy as np

from . import cells as F


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
            f"- {a} / {b} RMSE at ~{bud} evaluations: {F.x(r)}"
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
            f"| {F.mb(r.get('xla_mb'))} |"
        )
    mem = {r["value"]: r.get("xla_mb") for r in rows if r["sweep"] == "memory_steps"}
    if mem.get(50) and mem.get(1000):
        lines.append(
            f"\nIG memory growth steps 50 → 1000 at batch_size 256: **{mem[1000] / mem[50]:.2f}×** "
            f"(goal ≤ 1.2×)"
        )
    return "\n".join(lines)


def coverage(record: dict) -> str:
    """The registered methods the run has no case for, by family ("no benchmark case")."""
    rows = record.get("no_case") or []
    if not rows:
        return "every registered method has a benchmark case"
    families: dict[str, list[str]] = {}
    for r in rows:
        families.setdefault(r["family"], []).append(f"`{r['method']}`")
    return "\n".join(f"- {fam}: {', '.join(names)}: no benchmark case"
                     for fam, names in families.items())
