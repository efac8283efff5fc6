"""Sample efficiency of the sampled Shapley estimators and their variance-reduction options.

Two d = 12 games with exact Shapley values by enumeration (`exact_shapley`): a
smooth one (a tanh of a weighted sum plus squares) and one of products and maxima
of feature groups. For each estimator option and budget (model evaluations per
example), `--keys` estimates run as one vmapped, jitted call; the table gives the
RMSE against the exact values, the ratio `rms(stderr) / RMSE` (1 is honest) and
the coverage of the 95% intervals `value +- 1.96 stderr`. Budgets are the
evaluations `n_evals` reports (rows the chunks repeat included). Peers (shap,
captum) are compared in `benchmarks.extras` when importable.

    python -m benchmarks.sample_efficiency [--keys 100] [--budgets 100 300 1000 3000]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx

D = 12


def _x() -> jax.Array:
    return jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (1, 1, D, 1)), jnp.float32)


def smooth(z: jax.Array) -> jax.Array:
    v = z[:, 0, :, 0]
    return jnp.tanh(v @ jnp.linspace(-1.0, 1.0, D)) + 0.1 * jnp.sum(v**2, 1)


def groups(z: jax.Array) -> jax.Array:
    v = z[:, 0, :, 0]
    return (v[:, 0] * v[:, 1] * v[:, 2] + 2 * jnp.maximum(v[:, 3], v[:, 4])
            + v[:, 5] * v[:, 6] * v[:, 7] * v[:, 8] + jnp.max(v[:, 9:], 1) + 0.3 * v.sum(1))


GAMES = {"smooth": smooth, "products/maxima": groups}

OPTIONS: dict[str, Callable[[int], tuple[str, dict]]] = {
    # option -> (method, settings at a budget of about `b` evaluations per example)
    "kernel_shap": lambda b: ("kernel_shap", dict(n_samples=b - 2)),
    "kernel_shap enumerate_sizes=False": lambda b: (
        "kernel_shap", dict(n_samples=b - 2, enumerate_sizes=False)),
    "shapley_sampling (antithetic)": lambda b: (
        "shapley_sampling", dict(n_permutations=max(4, 2 * ((b - 2) // (2 * (D - 1)))))),
    "shapley_sampling antithetic=False": lambda b: (
        "shapley_sampling", dict(n_permutations=max(2, (b - 2) // (D - 1)), antithetic=False)),
}


def measure(game: Callable, option: str, budget: int, keys: int) -> dict:
    """RMSE, stderr ratio, coverage and evaluations of one option at one budget."""
    x, seg = _x(), jnp.arange(D)[None]
    exact = np.asarray(jx.exact_shapley(game, x, target=None, segments=seg).values[0])
    method, kw = OPTIONS[option](budget)
    fn = getattr(jx, method)
    run = jax.jit(jax.vmap(lambda k, z: fn(game, z, target=None, segments=seg, key=k, **kw),
                           in_axes=(0, None)))
    e = run(jax.random.split(jax.random.key(0), keys), x)
    err = np.asarray(e.values[:, 0]) - exact
    se = np.asarray(e.stderr[:, 0]) if e.stderr is not None else np.full_like(err, np.nan)
    rmse = float(np.sqrt(np.mean(err**2)))
    return {"rmse": rmse, "ratio": float(np.sqrt(np.mean(se**2)) / rmse) if rmse else np.nan,
            "cover": float(np.mean(np.abs(err) <= 1.96 * se)),
            "evals": int(np.asarray(e.n_evals)[0, 0])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sample_efficiency",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 1000, 3000])
    args = ap.parse_args(argv)
    print("| game | option | budget | n_evals | RMSE | rms(stderr)/RMSE | 95% coverage |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for gname, game in GAMES.items():
        for option in OPTIONS:
            for b in args.budgets:
                r = measure(game, option, b, args.keys)
                print(f"| {gname} | {option} | {b} | {r['evals']} | {r['rmse']:.2e} | "
                      f"{r['ratio']:.2f} | {r['cover']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
