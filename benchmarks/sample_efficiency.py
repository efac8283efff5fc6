"""Sample efficiency of the sampled Shapley estimators and their variance-reduction options.

Games with exact Shapley values: at d = 12 and 16 a smooth game (a tanh of a weighted
sum plus squares) and one of products and maxima of feature groups, exact by
enumeration (`exact_shapley`); at d = 64 a game of triple products and pairwise
maxima with a closed form (`blocks`, `blocks_shapley`); and at d = 12 and 16 a trained
CNN (`games.TrainedCNNGame`: the zoo's digits CNN on a grid of cells of one test image,
its value on every coalition enumerated once). For each estimator option
and budget (model evaluations per example), `--keys` estimates run as one vmapped,
jitted call; the table gives the RMSE against the exact values, the ratio
`rms(stderr) / RMSE` (1 is honest) and the coverage of the 95% intervals
`value +- 1.96 stderr`. Budgets are the evaluations `n_evals` reports (rows the
chunks repeat included).

Peers, when importable (`peers.games`): shap's `KernelExplainer` and Captum's
`KernelShap` and `ShapleyValueSampling` run on the same games, with the same
baseline (0), the same number of seeds (`--keys`) and, per seed, as many model
evaluations as the budget (the rows their game function really receives,
counted). `comparison` sets jaxplain's default and its best option against each
of them: the goal of #38 is an RMSE at most 0.5x shap's and 0.3x Captum's at
every budget. Without peers (or with `--no-peers`) the jaxplain columns still run.

    python -m benchmarks.sample_efficiency [--keys 100] [--no-peers] [--write]
    python -m benchmarks.sample_efficiency --keys 40 --games "trained CNN (digits)" --write

`--write` stores the full table in `benchmarks/results/sample_efficiency.md` and the
README's summary in `benchmarks/results/sample_efficiency_readme.md`, which
`docs/gen_docs.py` splices into README.md between `<!-- efficiency:start -->` and
`<!-- efficiency:end -->`. XLA's backend optimisation is off here (values do not
depend on it; compiling dominates these small programs: 2-4 s instead of 15-20 s).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain import testing

from .efficiency_report import (  # noqa: F401
    BUDGETS,
    DEFAULT,
    GOAL,
    HEADER,
    PEER_LIB,
    README_BUDGET,
    RESULTS,
    cells,
    comparison,
    enumerated_sizes,
    goal_summary,
    readme_block,
    row_line,
    version,
    write,
)
from .games import TrainedCNNGame

D = 12


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
    12: {"smooth": smooth, "products/maxima": groups, "trained CNN (digits)": TrainedCNNGame(12)},
    16: {"smooth": smooth, "products/maxima": groups, "trained CNN (digits)": TrainedCNNGame(16)},
    64: {"products/maxima (closed form)": blocks},
}


def _perms(b: int, d: int) -> int:
    return max(4, 2 * ((b - 2) // (2 * (d - 1))))


OPTIONS: dict[str, Callable[[int, int], tuple[str, dict]]] = {
    # option -> (method, settings at a budget of about `b` evaluations per example, d features)
    "kernel_shap": lambda b, d: ("kernel_shap", {"n_samples": b - 2}),
    "kernel_shap sampling=kernel": lambda b, d: (
        "kernel_shap", {"n_samples": b - 2, "sampling": "kernel"}),
    "shapley_sampling (antithetic)": lambda b, d: (
        "shapley_sampling", {"n_permutations": _perms(b, d)}),
    "kernel_shap control=cubic": lambda b, d: _kernel_control(b, d, "cubic"),
    "shapley_sampling control=cubic": lambda b, d: _control(b, d, "cubic", True),
    "shapley_sampling control=quadratic antithetic=False": lambda b, d: _control(
        b, d, "quadratic", False),
}
"""Option -> `(method, settings)`, or None where the option cannot serve the budget."""


def _control(b: int, d: int, control: str, antithetic: bool) -> tuple[str, dict] | None:
    """The regression-adjusted option, where its surrogate fits (`_control.py`)."""
    from jaxplain.perturbation import _control as c

    degree, n = c.CONTROLS[control], _perms(b, d)
    if c.n_terms(d, degree) > c.MAX_TERMS or n < c.min_permutations(d, degree, antithetic):
        return None
    return "shapley_sampling", {"n_permutations": n, "control": control,
                                "antithetic": antithetic}


def _kernel_control(b: int, d: int, control: str) -> tuple[str, dict] | None:
    """KernelSHAP's control variate, where its surrogate fits (`_kernelshap_control.py`)."""
    from jaxplain.perturbation import _control as c
    from jaxplain.perturbation import _kernelshap_control as kc
    from jaxplain.perturbation.kernelshap import schedule

    degree = c.CONTROLS[control]
    if c.n_terms(d, degree) > c.MAX_TERMS or not kc.usable(
            schedule(d, b - 2, True, True, "leverage"), degree):
        return None
    return "kernel_shap", {"n_samples": b - 2, "control": control}


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
            "cover": testing.coverage(e, exact) if e.stderr is not None else float("nan"),
            "evals": int(np.asarray(e.n_evals)[0, 0])}


def peers_available(use: bool = True) -> dict[str, bool]:
    """Peer column -> whether its library imports (all False when `use` is False)."""
    from .peers import common
    from .peers.games import PEERS

    return {name: use and common.available(lib) for name, (lib, _) in PEERS.items()}


def measure_peer(game: Callable, peer: str, budget: int, keys: int, d: int = D,
                 exact: np.ndarray | None = None) -> dict:
    """RMSE of one peer estimator over seeds `0..keys-1`, and the most rows it evaluated."""
    from .peers.games import PEERS

    x = np.asarray(_x(d)).reshape(-1)
    exact = exact_values(game, d) if exact is None else exact
    errs, rows = [], 0
    for seed in range(keys):
        v, n = PEERS[peer][1](game, x, budget, seed)
        errs.append(v - exact)
        rows = max(rows, n)
    return {"rmse": float(np.sqrt(np.mean(np.square(errs)))), "ratio": np.nan, "cover": np.nan,
            "evals": rows}


def run_all(keys: int, dims: tuple[int, ...], log: Callable = print,
            peers: dict[str, bool] | None = None, games: tuple[str, ...] = ()) -> list[dict]:
    """Every option's row, then every available peer's (`peer=True`), per d/game/budget
    (of the games named in `games`, or all)."""
    rows = []
    for d in dims:
        for gname, game in GAMES[d].items():
            if games and gname not in games:
                continue
            getattr(game, "prepare", lambda: None)()  # a table game: built before tracing
            exact = exact_values(game, d)
            for b in BUDGETS[d]:
                runs = [(o, False, measure) for o in OPTIONS if OPTIONS[o](b, d)]
                runs += [(p, True, measure_peer) for p, ok in (peers or {}).items() if ok]
                for option, peer, fn in runs:
                    r = dict(fn(game, option, b, keys, d, exact), d=d, game=gname,
                             option=option, budget=b, peer=peer)
                    rows.append(r)
                    log(row_line(r))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sample_efficiency",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--dims", type=int, nargs="+", default=sorted(GAMES))
    ap.add_argument("--no-peers", action="store_true", help="jaxplain's options only")
    ap.add_argument("--write", action="store_true",
                    help="store the rows (json) and the tables (markdown) in results/")
    ap.add_argument("--reuse-peers", action="store_true",
                    help="take the peers' rows from results/sample_efficiency.json (same --keys) "
                         "and run jaxplain's options only")
    ap.add_argument("--games", nargs="+", default=[], metavar="NAME",
                    help="only these games (as named in the table); with --write the stored "
                         "rows of the other games are kept (same --keys)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the markdown from results/sample_efficiency.json")
    args = ap.parse_args(argv)
    if args.render:
        stored = _stored()
        write(stored["rows"], stored["meta"])
        return 0
    if args.games and args.write:  # before the run: its rows would join the stored ones
        _stored(args.keys, "--games")
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # read when the CPU client starts (first computation), so still in time here
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_backend_optimization_level=0"
                                   " --xla_cpu_use_fusion_emitters=false").strip()
    stored_peers: list[dict] = []
    if args.reuse_peers:
        stored = _stored(args.keys, "--reuse-peers", fail=ap.error)
        stored_peers = [r for r in stored["rows"] if r.get("peer") and r["d"] in args.dims]
        args.no_peers = True
    peers = peers_available(not args.no_peers)
    missing = [p for p, ok in peers.items() if not ok]
    if missing and not stored_peers:
        print("peers skipped (" + ("--no-peers" if args.no_peers else "not importable")
              + "): " + ", ".join(missing))
    t0 = time.perf_counter()
    print(HEADER, flush=True)
    rows = run_all(args.keys, tuple(args.dims), log=lambda s: print(s, flush=True), peers=peers,
                   games=tuple(args.games))
    wall = time.perf_counter() - t0
    if stored_peers:
        rows = _merge(rows, stored_peers)
        peers = {p: p in {r["option"] for r in stored_peers} for p in peers}
    print(comparison(rows) + "\n\n" + goal_summary(rows) + f"\n{wall:.0f} s")
    if args.write:
        day = datetime.date.today().isoformat()
        ran = [p for p, ok in peers.items() if ok]
        meta = {"keys": args.keys, "wall": wall, "peers": ran,
                "command": " ".join(["python -m benchmarks.sample_efficiency",
                                     *(sys.argv[1:] if argv is None else argv)]),
                "note": f"{args.keys} keys, {day}, jax {jax.__version__}, "
                        f"{os.cpu_count()} CPU cores",
                "versions": [] if stored_peers else [
                    version(lib) for lib in sorted({PEER_LIB[p] for p in ran})]}
        if stored_peers:
            meta.update(versions=stored["meta"]["versions"],
                        peers_from=stored["meta"].get("peers_from") or (
                            f"`{stored['meta'].get('command', '--write')}`, "
                            f"{stored['meta']['note']}, {stored['meta']['wall']:.0f} s"))
        if args.games:
            rows, meta = _with_other_games(rows, meta, args.games)
        clean = [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()}
                 for r in rows]
        RESULTS.joinpath("sample_efficiency.json").write_text(
            json.dumps({"meta": meta, "rows": clean}, indent=1) + "\n")
        write(rows, meta)
    return 0


def _stored(keys: int | None = None, flag: str = "", fail: Callable | None = None) -> dict:
    """`results/sample_efficiency.json`, its missing numbers NaN; with `keys`, refused
    (`fail`, by default SystemExit) unless the stored run had that many keys."""
    stored = json.loads(RESULTS.joinpath("sample_efficiency.json").read_text())
    if keys is not None and stored["meta"]["keys"] != keys:
        msg = f"{flag}: the stored run has {stored['meta']['keys']} keys, not {keys}"
        if fail is not None:
            fail(msg)
        raise SystemExit(msg)
    stored["rows"] = [{k: np.nan if v is None else v for k, v in r.items()}
                      for r in stored["rows"]]
    return stored


def _with_other_games(rows: list[dict], meta: dict, games: list[str]) -> tuple[list, dict]:
    """The rows of `games` with the stored rows of every other game (per d, the stored
    games first), and the stored run's description with this one's added."""
    stored = _stored(meta["keys"], "--games")
    kept = [r for r in stored["rows"] if r["game"] not in games]
    added = (f"; the rows of {', '.join(games)}: `{meta['command']}`, {meta['note']}, "
             f"{meta['wall']:.0f} s" + (f" (peers: {', '.join(meta['versions'])})"
                                        if meta["versions"] else ""))
    return (sorted(kept + rows, key=lambda r: r["d"]),
            dict(stored["meta"], added=stored["meta"].get("added", "") + added))


def _merge(mine: list[dict], peers: list[dict]) -> list[dict]:
    """jaxplain's rows with stored peer rows after them, cell by cell."""
    out = []
    for r in mine:
        out.append(r)
        last = [m for m in mine if (m["d"], m["game"], m["budget"]) == (r["d"], r["game"],
                                                                       r["budget"])][-1]
        if r is last:
            out += [p for p in peers if (p["d"], p["game"], p["budget"]) == (r["d"], r["game"],
                                                                             r["budget"])]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
