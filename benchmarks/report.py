"""The full report of a run (`table.md`) and its files, all generated from the JSON record."""

from __future__ import annotations

from pathlib import Path

from . import cells as F
from . import harness as H
from . import plots, readme, tables
from . import record as record_mod
from .header import LEGEND, header


def peer_summary(res: dict) -> str:
    """`captum.Lime 1.4× best (perturbations_per_eval=250), 7.0× default` for each peer."""
    parts = []
    for g, best in sorted(res.get("best_peer", {}).items()):
        rb = res["ratios"].get(f"{g}:best/jaxplain")
        rd = res["ratios"].get(f"{g}:default/jaxplain")
        s = f"{g} {F.x(rb)}"
        cfg = F.config(best)
        if rd is not None and cfg and not H.is_default(best):
            s += f" best ({cfg}), {F.x(rd)} default"
        elif cfg:
            s += f" ({cfg})"
        parts.append(s)
    errors = [k for k, v in res.get("peers", {}).items() if "error" in v]
    if errors:
        parts.append("failed: " + ", ".join(errors))
    return "; ".join(parts) if parts else "—"


def one_line(res: dict) -> str:
    r = res["ratios"]
    off = r.get("rewrites_off/on")
    return (
        f"jaxplain {F.ms(res['jaxplain'])} ms, limit {F.ms(res['limit'])} ms, "
        f"jaxplain/limit {F.x(r.get('jaxplain/limit'))}, "
        f"compile {res['jaxplain'].get('compile_s', 0):.2f} s"
        + (f", rewrites off/on {F.x(off)}" if off is not None else "")
        + f"; peers/jaxplain: {peer_summary(res)}"
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
        "| rewrites off / on | first call s (compile s) | peer time / jaxplain time "
        "| agreement (rel. err) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for res in record.get("results", []):
        j = res["jaxplain"]
        first = f"{j.get('first_s', 0):.2f} ({j.get('compile_s', 0):.2f})"
        evals = f"{res['n_evals']} ({res['kind']}"
        declared = res.get("n_evals_declared")
        if declared is not None and declared != res["n_evals"]:
            evals += f"; declared {declared}"
        lines.append(
            f"| `{res['case']}` | {res['model']} | {res['n_images']} | {evals}) "
            f"| {F.ms(j)} | {F.ms(res['limit'])} | **{F.x(res['ratios'].get('jaxplain/limit'))}**"
            f"{_references(res)} | {F.x(res['ratios'].get('rewrites_off/on'))} | {first} "
            f"| {peer_summary(res)} | {_agreement_cell(res)} |"
        )
    return "\n".join(lines)


def _references(res: dict) -> str:
    """`" (1.00× chunked 64, 2.00× dispatch 64, program 0.95×)"` (the parts measured)."""
    r, extra = res["ratios"], []
    lct = res.get("limit_chunked") or {}
    if r.get("jaxplain/limit_chunked") is not None:
        same = " = one batch" if lct.get("same_as") else ""
        extra.append(f"{F.x(r['jaxplain/limit_chunked'])} chunked {lct.get('chunk', '?')}{same}")
    if r.get("jaxplain/limit_dispatch") is not None:
        extra.append(f"{F.x(r['jaxplain/limit_dispatch'])} dispatch "
                     f"{res['limit_dispatch'].get('batch')}")
    if r.get("program/limit") is not None:
        extra.append(f"program {F.x(r['program/limit'])}")
    return f" ({', '.join(extra)})" if extra else ""


def memory_table(record: dict) -> str:
    lines = [
        "| method | model | jaxplain XLA MB | limit XLA MB | jaxplain RSS+ MB | limit RSS+ MB "
        "| best peer RSS+ MB |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for res in record.get("results", []):
        peers = ", ".join(
            f"{g}: {F.mb(res['peers'][n].get('rss_peak_mb'))}"
            + (f" (CUDA {F.mb(res['peers'][n]['cuda_peak_mb'])})"
               if res["peers"][n].get("cuda_peak_mb") is not None else "")
            for g, n in sorted(res.get("best_peer", {}).items())
        )
        lines.append(
            f"| `{res['case']}` | {res['model']} | {F.mb(res['jaxplain'].get('xla_mb'))} "
            f"| {F.mb(res['limit'].get('xla_mb'))} | {F.mb(res['jaxplain'].get('rss_peak_mb'))} "
            f"| {F.mb(res['limit'].get('rss_peak_mb'))} | {peers or '—'} |"
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
    n_info, n_layer, n_rewrites = 0, 0, 0
    for a in rows:
        note = " (Captum weights rescaled by (n-1)/n)" if a.get("rescaled") else ""
        if informational(a):
            verdict = "n/a (reported only)"
        else:
            verdict = "yes" if a["pass"] else "**no**"
        if a.get("kink_nodes") is not None:
            n_info += 1
            ties = (f" at {a['ties']} (node, image) pairs, {a['ties_explained']} shown to be "
                    "ties" if a.get("ties") is not None else "")
            verdict += (
                f" ({a['kink_nodes']} of {a.get('steps', '?')} path nodes differ{ties}; "
                f"the other nodes {a['rel_err_other_nodes']:.1e})"
            )
        elif a.get("off_images") is not None:
            n_layer += a.get("kind") != "rewrites"
            n_rewrites += a.get("kind") == "rewrites"
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
            "model one ReLU input was +2.2e-8 in XLA and -1.5e-8 in PyTorch). It passes when "
            "every disagreeing (node, image) is shown to be such a tie (one side's gradient a "
            "relative step of 1e-6 off the node, along the path or in a random direction, "
            "reproduces the other side's) and the sums over "
            "the other nodes agree within the tolerance. Rewrites checks of IG are examined the "
            "same way (rewrites on against off)."
        )
    if n_layer:
        lines.append(
            "\nA layer-method check above tolerance is examined image by image: a path node "
            "whose ReLU input lies within rounding of 0 can take different sides in XLA and "
            "PyTorch. It passes when at most one image is off, the others agree, and that image "
            "agrees when both sides run it on one more path node (other nodes, no kink)."
        )
    if n_rewrites:
        lines.append(
            "\nA rewrites off == on check above tolerance is examined image by image: the two "
            "programs can round a ReLU input within float32 rounding of 0 to different sides at "
            "one evaluation, as XLA and PyTorch can. In a batch of 4 or more it passes when one "
            "image is off and the others agree."
        )
    return "\n".join(lines)


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
                "At full float32 precision on both sides (no TF32); and jaxplain's values with "
                "the CPU rewrites off against on.",
                agreement_table(record),
                "## Sample efficiency: relative RMSE vs exact Shapley (d = 12), (model evaluations)",
                tables.efficiency_table(record),
                "## Scaling",
                tables.scaling_table(record),
                "![scaling](scaling.png)",
                "## Registered methods without a benchmark case",
                tables.coverage(record),
                "## Skipped",
                skip or "nothing",
            ]
        )
        + "\n"
    )


def write_all(record: dict, out_dir: Path, readme_path: Path | None = None) -> list[Path]:
    """latest.json, table.md, ratios.png, scaling.png in `out_dir`; with `readme_path`, the
    README section too (linking `out_dir`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [record_mod.write_json(record, out_dir / "latest.json")]
    (out_dir / "table.md").write_text(full_markdown(record))
    paths.append(out_dir / "table.md")
    for fn, name in ((plots.ratio_chart, "ratios.png"), (plots.scaling_chart, "scaling.png")):
        p = fn(record, out_dir / name)
        if p is not None:
            paths.append(p)
    if readme_path is not None:
        try:
            rel = out_dir.resolve().relative_to(readme_path.resolve().parent).as_posix()
        except ValueError:
            rel = str(out_dir)
        if readme.update_readme(record, readme_path, rel):
            paths.append(readme_path)
    return paths
