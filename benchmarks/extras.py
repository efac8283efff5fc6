"""Sample efficiency (error vs exact Shapley at equal evaluations) and scaling sweeps.

Sample efficiency: one image of the small CNN, d = 12 grid features (3 x 4),
zero baseline. The exact Shapley values come from enumerating all 2^12
coalitions with the limit's forward pass and the textbook formula (independent
of jaxplain's own `exact_shapley`, which is checked against it). Every sampled
estimator then runs at (nearly) equal numbers of model evaluations over several
seeds; reported is the RMSE over features and seeds.

Scaling: time and XLA memory of integrated gradients vs `steps` and vs
`batch_size`, and of KernelSHAP vs `n_samples`, all at a fixed `batch_size`, to
show cost grows linearly while memory stays flat.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain._compile import jit

from . import harness as H
from . import limits, memory
from . import peers as P


def coalition_values(model, x: np.ndarray, target: int, segments: np.ndarray) -> np.ndarray:
    """The target logit of every coalition of one image, zero baseline: `(2^d,)`, bit `j` = feature `j`."""
    d = int(segments.max()) + 1
    codes = np.arange(2**d)
    masks = ((codes[:, None] >> np.arange(d)[None]) & 1).astype(bool)  # (2^d, d)
    keep = masks[:, segments]  # (2^d, H, W)
    inputs = np.where(keep[..., None], x[0][None], 0.0).astype(np.float32)
    t = jnp.full((len(codes),), target, jnp.int32)
    return np.concatenate(
        [
            np.asarray(limits.limit_forward(model, jnp.asarray(inputs[s : s + 1024]), t[s : s + 1024]))
            for s in range(0, len(codes), 1024)
        ]
    ).astype(np.float64)


def shapley_from_values(v: np.ndarray) -> np.ndarray:
    """Shapley values of the game `v` (`(2^d,)`, as `coalition_values`) by the textbook formula."""
    d = int(round(math.log2(len(v))))
    codes = np.arange(2**d)
    sizes = np.array([bin(c).count("1") for c in codes])
    w = np.array(
        [math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)]
    )
    phi = np.zeros(d)
    for j in range(d):
        without = codes[(codes >> j) & 1 == 0]
        phi[j] = np.sum(w[sizes[without]] * (v[without | (1 << j)] - v[without]))
    return phi


def exact_shapley_values(model, x: np.ndarray, target: int, segments: np.ndarray) -> np.ndarray:
    """Shapley values of the target logit on one image by full enumeration (d <= 16)."""
    return shapley_from_values(coalition_values(model, x, target, segments))


def _rmse(estimates: list[np.ndarray], exact: np.ndarray) -> float:
    e = np.stack([np.asarray(a, np.float64).reshape(-1) for a in estimates]) - exact[None]
    return float(np.sqrt(np.mean(e**2)))


def sample_efficiency(ctx, quick: bool = False, log: Callable = print) -> list[dict]:
    """RMSE vs exact Shapley at (nearly) equal model evaluations, per estimator and budget."""
    x = ctx.images(1)
    t = ctx.targets(x)
    seg = np.asarray(jx.grid_segments(ctx.spec.size, ctx.spec.size, (3, 4)))
    d = 12
    exact = exact_shapley_values(ctx.model, x, int(t[0]), seg)
    scale = float(np.sqrt(np.mean(exact**2)))
    e = np.asarray(jx.exact_shapley(ctx.model, x, target=t, segments=seg).values)[0]
    rows: list[dict] = [{"estimator": "jaxplain.exact_shapley", "budget": None, "n_evals": 2**d,
                         "rmse": _rmse([e], exact), "rmse_rel": _rmse([e], exact) / scale,
                         "seeds": 1}]
    seeds = range(3 if quick else 16)  # 8 seeds left the ratios +-15% between runs
    for n_perm in (8,) if quick else (4, 8, 16, 32):
        budget = 2 + n_perm * (d - 1)  # jaxplain.shapley_sampling's evaluations
        runs: dict[str, tuple[int | None, list]] = {}
        for s in seeds:
            for name, evals, est in _estimates(ctx, x, t, seg, n_perm, budget, s):
                runs.setdefault(name, (evals, []))[1].append(est)
        for name, (evals, ests) in runs.items():
            r = _rmse(ests, exact)
            rows.append({"estimator": name, "budget": budget, "n_evals": evals, "rmse": r,
                         "rmse_rel": r / scale, "seeds": len(ests),
                         "seed_mse": [_rmse([e], exact) ** 2 for e in ests]})
        log(
            f"  budget {budget}: "
            + ", ".join(f"{n}={_rmse(e, exact):.4f}" for n, (_, e) in runs.items())
        )
    return rows


def _estimates(ctx, x, t, seg, n_perm: int, budget: int, seed: int) -> list[tuple]:
    """`(estimator, model evaluations, values)` of every estimator for one seed."""
    d = int(seg.max()) + 1
    key = jax.random.key(1000 + seed)
    out = []
    r = jx.shapley_sampling(ctx.model, x, target=t, segments=seg, key=key, n_permutations=n_perm)
    out.append(("jaxplain.shapley_sampling", int(np.asarray(r.n_evals)[0]),
                np.asarray(r.values)[0]))
    r = jx.kernel_shap(ctx.model, x, target=t, segments=seg, key=key, n_samples=budget)
    out.append(("jaxplain.kernel_shap", int(np.asarray(r.n_evals)[0]), np.asarray(r.values)[0]))
    if ctx.peer("captum"):
        import torch

        torch.manual_seed(seed)
        m = max(1, round((budget - 1) / d))
        v = P.captum_shapley_sampling(ctx.torch_model, x, t, seg, n_permutations=m, ppe=d)()
        out.append(("captum.ShapleyValueSampling", 1 + m * d, P.to_features(v, seg)[0]))
        torch.manual_seed(seed)
        v = P.captum_kernel_shap(ctx.torch_model, x, t, seg, n_samples=budget, ppe=budget)()
        out.append(("captum.KernelShap", budget, P.to_features(v, seg)[0]))
    if ctx.torch_model is not None and P.available("shap"):
        for l1 in ("auto", False):
            v = P.shap_kernel(ctx.torch_model, x, t, seg, n_samples=budget, seed=seed, l1_reg=l1)()
            out.append((f"shap.KernelExplainer[l1_reg={l1}]", budget, np.asarray(v).reshape(-1)[:d]))
    return out


def _timed(fn: Callable, repeats: int = 3) -> float:
    return H.measure({"f": fn}, repeats)["f"]["median_s"]


def _time_and_memory(f: Callable, *args) -> dict:
    """`median_s` and `xla_mb` of `jit(f)(*args)` from ONE compile: the sweeps are
    compile-bound, and timing the public call besides compiled it a second time."""
    compiled = jit(f).lower(*args).compile()
    return {"median_s": _timed(lambda: compiled(*args)), "xla_mb": memory.compiled_memory_mb(compiled)}


def scaling(ctx, quick: bool = False, log: Callable = print) -> list[dict]:
    """Time and memory vs steps, batch_size and n_samples (jaxplain only)."""
    rows = _ig_sweeps(ctx)
    log("  integrated_gradients sweeps done")
    rows += _kernel_shap_sweep(ctx)
    log("  kernel_shap sweep done")
    return rows


def _ig_sweeps(ctx) -> list[dict]:
    """Integrated gradients vs steps and vs batch_size, and its memory at 50 vs 1000 steps."""
    rows: list[dict] = []
    model = ctx.model
    x = ctx.images(4)
    t = ctx.targets(x)
    xd = jnp.asarray(x)
    for steps in (25, 50, 100, 200):
        f = lambda m, z, s=steps: jx.integrated_gradients(
            m, z, target=t, steps=s, batch_size=128
        )
        rows.append(
            {
                "sweep": "steps",
                "method": "integrated_gradients",
                "value": steps,
                "batch_size": 128,
                "n_evals": 4 * steps,
                **_time_and_memory(f, model, xd),
            }
        )
    for bs in (16, 32, 64, 128, 256):
        f = lambda m, z, b=bs: jx.integrated_gradients(m, z, target=t, steps=64, batch_size=b)
        rows.append(
            {
                "sweep": "batch_size",
                "method": "integrated_gradients",
                "value": bs,
                "steps": 64,
                "n_evals": 256,
                **_time_and_memory(f, model, xd),
            }
        )
    # Issue 3: memory for steps=50 vs steps=1000 at the same batch_size (16 images).
    x16 = jnp.asarray(ctx.images(16))
    t16 = ctx.targets(ctx.images(16))
    for steps in (50, 1000):
        f = lambda m, z, s=steps: jx.integrated_gradients(
            m, z, target=t16, steps=s, batch_size=256
        )
        rows.append(
            {
                "sweep": "memory_steps",
                "method": "integrated_gradients",
                "value": steps,
                "batch_size": 256,
                "n_evals": 16 * steps,
                "median_s": None,
                "xla_mb": memory.xla_memory_mb(f, model, x16),
            }
        )
    return rows


def _kernel_shap_sweep(ctx) -> list[dict]:
    """KernelSHAP vs n_samples at batch_size 256."""
    rows: list[dict] = []
    model = ctx.model
    x = ctx.images(1)
    t = ctx.targets(x)
    xd = jnp.asarray(x)
    seg = np.asarray(jx.grid_segments(ctx.spec.size, ctx.spec.size, 8))
    key = jax.random.key(0)
    for ns in (250, 500, 1000, 2000, 4000):
        f = lambda m, z, n=ns: jx.kernel_shap(
            m,
            z,
            target=t,
            segments=seg,
            key=key,
            n_samples=n,
            batch_size=256,
        )
        rows.append(
            {
                "sweep": "n_samples",
                "method": "kernel_shap",
                "value": ns,
                "batch_size": 256,
                "n_evals": ns,
                **_time_and_memory(f, model, xd),
            }
        )
    return rows
