"""Global and local linear surrogates of a small Flax classifier on 2-D data, drawn over
its decision boundary, plus the global feature importance from integrated gradients.

    python examples/tabular_surrogate.py [--quick] [--out DIR]

A global linear surrogate is one straight line for the whole dataset; its R^2 says
how much of the model it captures. Local surrogates (the same fit on a small
neighbourhood of one point, as LIME does for tabular data) follow the curved
boundary where they are fitted.
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

import jaxplain as jx
from jaxplain.app.cli import example_parser, parse_example_args


def parse(argv, name):
    ap = example_parser(__doc__, Path(__file__).parent / "output" / name)
    return parse_example_args(ap, argv)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(32)(x))
        x = nn.tanh(nn.Dense(32)(x))
        return nn.Dense(2)(x)


def train(x: np.ndarray, y: np.ndarray, steps: int):
    net = MLP()
    params = net.init(jax.random.key(0), x[:1])
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
        )(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    for _ in range(steps):
        params, state, loss = step(params, state)
    return jx.from_linen(net, params), float(loss)


def log_odds(outputs):
    """The scalar we explain: log p(class 1) - log p(class 0); the decision boundary is 0."""
    return outputs[:, 1] - outputs[:, 0]


def main(argv=None) -> dict[str, Path]:
    from sklearn.datasets import make_moons

    args = parse(argv, "tabular_surrogate")
    x, y = make_moons(n_samples=400, noise=0.2, random_state=0)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = y.astype(np.int32)
    model, loss = train(jnp.asarray(x), jnp.asarray(y), 200 if args.quick else 800)
    acc = float(np.mean(np.asarray(jnp.argmax(model(jnp.asarray(x)), -1)) == y))
    print(f"MLP training accuracy {acc:.1%} (loss {loss:.3f})")

    # One global linear surrogate of the log-odds over the whole dataset.
    glob = jx.global_surrogate(model, x, target=log_odds)
    print(
        f"global surrogate: coef {np.round(np.asarray(glob.coef), 2)}, R^2 = {float(glob.r2):.2f}"
    )
    g, p1, line = decision_boundary(model)

    # Local surrogates: the same fit on Gaussian neighbourhoods of points on the boundary.
    rng = np.random.default_rng(0)
    anchors = line[np.linspace(0, len(line) - 1, 5).round().astype(int)].astype(np.float32)
    local = []
    for a in anchors:
        hood = (a + RADIUS * rng.normal(size=(256, 2))).astype(np.float32)
        local.append(jx.global_surrogate(model, hood, target=log_odds))

    # Global importance: mean |integrated gradients| of the log-odds per class.
    ig = jx.integrated_gradients(model, x, target=log_odds, baseline=x.mean(0), steps=32)
    gi = jx.global_importance(ig, y)

    fig = Figure(figsize=(10.5, 4.6), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=(1.6, 1))
    draw_surrogates(fig, ax, x, y, g, p1, glob, anchors, local)
    draw_importance(bx, gi)
    path = args.out / "surrogates.png"
    fig.savefig(path, dpi=110)
    print("wrote", path)
    return {"surrogates": path}


RADIUS = 0.3
"""Radius of the local surrogates' Gaussian neighbourhoods."""


def decision_boundary(model):
    """The grid, p(class 1) on it, and the model's decision boundary (p = 0.5) as points."""
    from skimage.measure import find_contours

    g = np.linspace(-2.6, 2.6, 160, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    p1 = np.asarray(jax.nn.softmax(model(jnp.asarray(grid)))[:, 1]).reshape(gx.shape)
    line = max(find_contours(p1, 0.5), key=len)  # (row, col) grid coordinates
    line = np.stack(
        [np.interp(line[:, 1], np.arange(len(g)), g), np.interp(line[:, 0], np.arange(len(g)), g)],
        1,
    )
    return g, p1, line[(np.abs(line) < 1.8).all(1)]


def boundary(s, center, half):
    """Points of the surrogate's zero line near `center` (its local decision boundary)."""
    w, b = np.asarray(s.coef), float(s.intercept)
    n = w / (np.linalg.norm(w) + 1e-12)
    foot = center - n * (center @ w + b) / (np.linalg.norm(w) + 1e-12)  # closest point on it
    d = np.array([-n[1], n[0]])
    return np.stack([foot - half * d, foot + half * d])


def draw_surrogates(fig, ax, x, y, g, p1, glob, anchors, local) -> None:
    """The decision boundary, the data, the global surrogate and the local ones."""
    from matplotlib.patches import Circle

    gx, gy = np.meshgrid(g, g)
    cs = ax.contourf(gx, gy, p1, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
    ax.contour(gx, gy, p1, levels=[0.5], colors="k", linewidths=1.5)
    fig.colorbar(cs, ax=ax, label="p(class 1)", shrink=0.85)
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", s=9, edgecolors="k", linewidths=0.3)
    seg = boundary(glob, x.mean(0), 3.0)
    ax.plot(seg[:, 0], seg[:, 1], "--", color="green", lw=2,
            label=f"global linear surrogate (R$^2$={float(glob.r2):.2f})")
    r2 = [float(t.r2) for t in local]
    for i, (a, s) in enumerate(zip(anchors, local)):
        seg = boundary(s, a, 0.45)
        ax.plot(seg[:, 0], seg[:, 1], color="orange", lw=2.5,
                label=f"local surrogates (R$^2$ {min(r2):.2f}-{max(r2):.2f})" if i == 0 else None)
        ax.add_patch(Circle(a, RADIUS, fill=False, ls=":", color="orange"))
        w = np.asarray(s.coef)
        ax.annotate("", a + 0.35 * w / np.linalg.norm(w), a,
                    arrowprops=dict(arrowstyle="->", color="k", lw=1.5))
        ax.plot(*a, "o", color="orange", mec="k", ms=6)
    ax.set_xlim(g[0], g[-1])
    ax.set_ylim(g[0], g[-1])
    ax.set_aspect("equal")
    ax.set_xlabel("feature 0")
    ax.set_ylabel("feature 1")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_title("decision boundary (black), surrogates, direction of class 1 (arrows)", fontsize=9)


def draw_importance(bx, gi) -> None:
    """Mean |integrated gradients| per feature, per class and overall."""
    per = np.asarray(gi.per_class)
    width = 0.26
    for k in range(per.shape[0]):
        bx.bar(np.arange(2) + (k - 1) * width, per[k], width, label=f"class {k}")
    bx.bar(np.arange(2) + width, np.asarray(gi.overall), width, color="0.3", label="all")
    bx.set_xticks([0, 1], ["feature 0", "feature 1"])
    bx.set_ylabel("mean |integrated gradients| of the log-odds")
    bx.set_title("global importance", fontsize=10)
    bx.legend(fontsize=8, frameon=False)


if __name__ == "__main__":
    main()
