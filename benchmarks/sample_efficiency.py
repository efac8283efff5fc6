"""Sample efficiency of the sampled Shapley estimators and their variance-reduction options.

Games with exact Shapley values: at d = 12 and 16 a smooth game (a tanh of a weighted
sum plus squares) and one of products and maxima of feature groups, exact by
enumeration (`exact_shapley`); at d = 64 a game of triple products and pairwise
maxima with a closed form (`blocks`, `blocks_shapley`). For each estimator option
and budget (model evaluations per example), `--keys` estimates run as one vmapped,
jitted call; the table gives the RMSE against the exact values, the ratio
`rms(stderr) / RMSE` (1 is honest) and the coverage of the 95% intervals
`value +- 1.96 stderr`. Budgets are the evaluations `n_evals` reports (rows the
chunks repeat included).

Peers: shap's KernelExplainer and Captum's KernelShap / ShapleyValueSampling are
compared on the benchmark CNN by `python -m benchmarks` (`extras.sample_efficiency`)
when they are importable; this script has no peer columns (neither is installed in
the project's venv).

    python -m benchmarks.sample_efficiency [--keys 100] [--write]

`--write` stores the full table in `benchmarks/results/sample_efficiency.md` and the
README's summary in `benchmarks/results/sample_efficiency_readme.md`, which
`docs/gen_docs.py` splices into README.md between `<!-- efficiency:start -->` and
`<!-- efficiency:end -->`. XLA's backend optimisation is off here (values do not
depend on it; compiling dominates these small programs: 2-4 s instead of 15-20 s).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx

D = 12
RESULTS = Path(__file__).resolve().parent / "results"


def _x(d: int = D) -> jax.Array:
    return jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (1, 1, d, 1)), jnp.float32)


def smooth(z: jax.Array) -> jax.Array:
    v = z[:, 0, :, 0]
    return jnp.tanh(v @ jnp.linspace(-1.0, 1.0, v.shape[1])) + 0.1 * jnp.sum(v**2, 1)


def groups(z: jax.Array) -> jax.Array:
    v = z[:, 0, :, 0]
    return (v[:, 0] * v[:, 1] * v[:, 2] + 2 * jnp.maximum(v[:, 3], v[:, 4])
            + v[:, 5] * v[:, 6] * v[:, 7] * v[:, 8] + jnp.max(v[:, 9:], 1) + 0.3 * v.sum(1))


def blocks(z: jax.Array) -> jax.Array:
    """Blocks of 4 features `(a, b, c, e)`: `a b c + 2 max(c, e)`, plus `0.3 sum(x)`."""
    v = z[:, 0, :, 0]
    q = v.reshape(v.shape[0], -1, 4)
    return jnp.sum(q[..., 0] * q[..., 1] * q[..., 2] + 2 * jnp.maximum(q[..., 2], q[..., 3]),
                   1) + 0.3 * v.sum(1)


def blocks_shapley(x: np.ndarray) -> np.ndarray:
    """`blocks`'s Shapley values at `x > 0` (flat, `(d,)`) against the baseline 0: a product
    of `m` features is a unanimity game (each gets `prod / m`); `max(c, e)` gives the
    smaller `min / 2` and the larger `max - min / 2`; the linear part `0.3 x`."""
    q = np.asarray(x, np.float64).reshape(-1, 4)
    phi = np.zeros_like(q)
    phi[:, :3] += (q[:, 0] * q[:, 1] * q[:, 2] / 3)[:, None]
    lo, hi = np.minimum(q[:, 2], q[:, 3]), np.maximum(q[:, 2], q[:, 3])
    c_low = q[:, 2] <= q[:, 3]
    phi[:, 2] += 2 * np.where(c_low, lo / 2, hi - lo / 2)
    phi[:, 3] += 2 * np.where(c_low, hi - lo / 2, lo / 2)
    return (phi + 0.3 * q).reshape(-1)


GAMES: dict[int, dict[str, Callable]] = {
    12: {"smooth": smooth, "products/maxima": groups},
    16: {"smooth": smooth, "products/maxima": groups},
    64: {"products/maxima (closed form)": blocks},
}
BUDGETS = {12: (100, 300, 1000, 3000), 16: (100, 300, 1000, 3000), 64: (300, 1000, 3000)}
DEFAULT = "kernel_shap"
"""The estimator a user gets without settings (KernelSHAP with its defaults)."""


def _perms(b: int, d: int) -> int:
    return max(4, 2 * ((b - 2) // (2 * (d - 1))))


OPTIONS: dict[str, Callable[[int, int], tuple[str, dict]]] = {
    # option -> (method, settings at a budget of about `b` evaluations per example, d features)
    "kernel_shap": lambda b, d: ("kernel_shap", dict(n_samples=b - 2)),
    "kernel_shap sampling=kernel": lambda b, d: (
        "kernel_shap", dict(n_samples=b - 2, sampling="kernel")),
    "shapley_sampling (antithetic)": lambda b, d: (
        "shapley_sampling", dict(n_permutations=_perms(b, d))),
}


def exact_values(game: Callable, d: int) -> np.ndarray:
    x = _x(d)
    if d > 16:
        return blocks_shapley(np.asarray(x).reshape(-1))
    return np.asarray(jx.exact_shapley(game, x, target=None, segments=jnp.arange(d)[None])
                      .values[0])


def measure(game: Callable, option: str, budget: int, keys: int, d: int = D,
            exact: np.ndarray | None = None) -> dict:
    """RMSE, stderr ratio, coverage and evaluations of one option at one budget."""
    x, seg = _x(d), jnp.arange(d)[None]
    exact = exact_values(game, d) if exact is None else exact
    method, kw = OPTIONS[option](budget, d)
    fn = getattr(jx, method)
    run = jax.jit(jax.vmap(lambda k, z: fn(game, z, target=None, segments=seg, key=k, **kw),
                           in_axes=(0, None)))
    e = run(jax.random.split(jax.random.key(0), keys), x)
    err = np.asarray(e.values[:, 0], np.float64) - exact
    se = np.asarray(e.stderr[:, 0]) if e.stderr is not None else np.full_like(err, np.nan)
    rmse = float(np.sqrt(np.mean(err**2)))
    return {"rmse": rmse, "ratio": float(np.sqrt(np.mean(se**2)) / rmse) if rmse else np.nan,
            "cover": float(np.mean(np.abs(err) <= 1.96 * se)),
            "evals": int(np.asarray(e.n_evals)[0, 0])}


def run_all(keys: int, dims: tuple[int, ...], log: Callable = print) -> list[dict]:
    rows = []
    for d in dims:
        for gname, game in GAMES[d].items():
            exact = exact_values(game, d)
            for b in BUDGETS[d]:
                for option in OPTIONS:
                    r = dict(measure(game, option, b, keys, d, exact), d=d, game=gname,
                             option=option, budget=b)
                    rows.append(r)
                    log(f"| {d} | {gname} | {option} | {b} | {r['evals']} | {r['rmse']:.2e} | "
                        f"{r['ratio']:.2f} | {r['cover']:.3f} |")
    return rows


HEADER = ("| d | game | option | budget | n_evals | RMSE | rms(stderr)/RMSE | 95% coverage |\n"
          "|---:|---|---|---:|---:|---:|---:|---:|")


def full_table(rows: list[dict]) -> str:
    return HEADER + "\n" + "\n".join(
        f"| {r['d']} | {r['game']} | {r['option']} | {r['budget']} | {r['evals']} | "
        f"{r['rmse']:.2e} | {r['ratio']:.2f} | {r['cover']:.3f} |" for r in rows)


README_BUDGET = 1000
"""The README shows one budget per game (the full table has them all)."""


def readme_block(rows: list[dict], note: str) -> str:
    """The README's summary: per game at `README_BUDGET` evaluations, the default's RMSE
    and the best option's."""
    out = [f"Sampled Shapley values against exact ones ({note}): RMSE of the default "
           "`kernel_shap` at 1000 evaluations, the best option's and its 95% coverage "
           "([all](benchmarks/results/sample_efficiency.md); shap and Captum not installed).",
           "",
           "| d | game | evals | default RMSE | best option | best RMSE | coverage |",
           "|---:|---|---:|---:|---|---:|---:|"]
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["d"], r["game"], r["budget"]), []).append(r)
    for (d, game, b), rs in cells.items():
        if b != README_BUDGET:
            continue
        default = next(r for r in rs if r["option"] == DEFAULT)
        best = min(rs, key=lambda r: r["rmse"])
        out.append(f"| {d} | {game} | {b} | {default['rmse']:.1e} | `{best['option']}` | "
                   f"{best['rmse']:.1e} ({best['rmse'] / default['rmse']:.2f}x) | "
                   f"{best['cover']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sample_efficiency",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--dims", type=int, nargs="+", default=sorted(GAMES))
    ap.add_argument("--write", action="store_true", help="store the tables in results/")
    args = ap.parse_args(argv)
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # read when the CPU client starts (first computation), so still in time here
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_backend_optimization_level=0"
                                   " --xla_cpu_use_fusion_emitters=false").strip()
    t0 = time.perf_counter()
    print(HEADER, flush=True)
    rows = run_all(args.keys, tuple(args.dims), log=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    print(f"{wall:.0f} s")
    if args.write:
        day = datetime.date.today().isoformat()
        note = f"{args.keys} keys, {day}, jax {jax.__version__}, {os.cpu_count()} CPU cores"
        RESULTS.joinpath("sample_efficiency.md").write_text(
            "# Sample efficiency of the sampled Shapley estimators\n\n"
            f"Generated by `python -m benchmarks.sample_efficiency --keys {args.keys} --write` "
            f"({note}; {wall:.0f} s). Exact values by enumeration (d = 12, 16) or in closed "
            "form (d = 64, `blocks_shapley`). No peer (shap, captum) was importable.\n\n"
            + full_table(rows) + "\n")
        RESULTS.joinpath("sample_efficiency_readme.md").write_text(readme_block(rows, note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
