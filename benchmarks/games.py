"""Stored games: sampled Shapley estimators compared over many seeds in seconds.

A game is the benchmark CNN's target logit on every coalition of one image's
12 grid features (`extras.coalition_values`, 4096 forwards, once). `lookup`
turns the stored values into a JAX model on `(B, 1, d, 1)` inputs of 0/1, whose
feature `j` is pixel `j`: jaxplain's estimators run on it unchanged, and one
estimate costs no CNN forward. This is how `kernelshap.ENUM_SHARE` and the
stratified design were chosen; use it before changing a sampled estimator.

    python -m benchmarks.games [--seeds 60] [--images 2] [--budgets 46 90 178 354]

prints, per game, each estimator's RMSE against the exact values at equal budgets.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx

from . import extras, twins

GRID = (3, 4)


def lookup(values: np.ndarray) -> tuple[Callable, jax.Array, np.ndarray]:
    """`(model, x, segments)` playing the game `values` (`(2^d,)`, bit `j` = feature `j`)."""
    d = int(round(np.log2(len(values))))
    table = jnp.asarray(values, jnp.float32)
    bits = jnp.asarray(1 << np.arange(d), jnp.int32)

    def model(z):
        return table[jnp.round(z.reshape(z.shape[0], d)).astype(jnp.int32) @ bits]

    return model, jnp.ones((1, 1, d, 1), jnp.float32), np.arange(d).reshape(1, d)


def cnn_games(images: int = 2) -> dict[str, np.ndarray]:
    """The games of the four benchmark CNNs on their first `images` benchmark images."""
    out = {}
    for arch in ("small", "large"):
        for pool in ("avg", "max"):
            spec = twins.Spec(arch, pool)
            module, variables = twins.flax_model(spec)
            model = jx.from_linen(module, variables)
            xs = twins.images(images, spec.size, seed=1)
            seg = np.asarray(jx.grid_segments(spec.size, spec.size, GRID))
            for i in range(images):
                x = xs[i : i + 1]
                t = int(np.argmax(np.asarray(model(jnp.asarray(x)))[0]))
                out[f"{spec.name}-{i}"] = extras.coalition_values(model, x, t, seg)
    return out


class TrainedCNNGame:
    """A trained CNN as a game of `d` features: the zoo's 16x16 digits CNN (the one
    `examples/digits_cnn.py` trains, 4 epochs, cached in `~/.cache/jaxplain`) on test
    image `image`, the logit of its predicted class, with the absent cells of a grid of
    `d` cells (`3 x 4` or `4 x 4`) black.

    Called like the sample-efficiency games (`(B, 1, d, 1)` rows whose absent features
    are 0): a feature is present where its entry is not 0. The CNN's value on every
    coalition is computed once (`prepare`, `2^d` forwards) and the calls read that
    table, so the estimators and the peers play exactly the CNN's game at the cost of a
    lookup, and the exact Shapley values are those of the enumeration.
    """

    GRIDS = {12: (3, 4), 16: (4, 4)}

    def __init__(self, d: int, image: int = 0):
        self.d, self.image, self.values = d, image, None

    def prepare(self) -> np.ndarray:
        """The table `(2^d,)` (bit `j` = cell `j`), trained and enumerated on first use."""
        if self.values is None:
            from jaxplain.app import data, zoo

            ds = data.load_digits(size=16)
            trained = zoo.train_classifier(
                zoo.SmallCNN((16, 32, 32), n_classes=10), ds.x_train, ds.y_train, ds.x_test,
                ds.y_test, epochs=4, lr=1e-2, cache=zoo.default_cache_dir())
            x = ds.x_test[self.image : self.image + 1]
            t = int(np.argmax(np.asarray(trained.model(jnp.asarray(x)))[0]))
            seg = np.asarray(jx.grid_segments(16, 16, self.GRIDS[self.d]))
            self.values = extras.coalition_values(trained.model, x, t, seg)
        return self.values

    def __call__(self, z: jax.Array) -> jax.Array:
        if self.values is None:
            raise RuntimeError("TrainedCNNGame: call prepare() before tracing the game")
        bits = jnp.asarray(1 << np.arange(self.d), jnp.int32)
        present = (z.reshape(z.shape[0], self.d) != 0).astype(jnp.int32)
        return jnp.asarray(self.values, jnp.float32)[present @ bits]


ESTIMATORS: dict[str, Callable] = {
    "kernel_shap": lambda m, x, s, k, budget: jx.kernel_shap(
        m, x, target=None, segments=s, key=k, n_samples=budget - 2
    ),
    "shapley_sampling": lambda m, x, s, k, budget: jx.shapley_sampling(
        m, x, target=None, segments=s, key=k, n_permutations=max(2, (budget - 2) // (s.size - 1))
    ),
}
"""Each estimator at about `budget` model evaluations (the two ends included)."""


def rmse(values: np.ndarray, estimator: Callable, budget: int, seeds: int) -> float:
    """RMSE over features and seeds of `estimator` on the game `values`."""
    exact = extras.shapley_from_values(values)
    model, x, seg = lookup(values)
    est = [
        np.asarray(estimator(model, x, seg, jax.random.key(s), budget).values)[0]
        for s in range(seeds)
    ]
    return float(np.sqrt(np.mean(np.square(np.stack(est) - exact[None]))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.games", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--budgets", type=int, nargs="+", default=[46, 90, 178, 354])
    args = ap.parse_args(argv)
    games = cnn_games(args.images)
    print("| game | estimator | " + " | ".join(f"RMSE @ {b}" for b in args.budgets) + " |")
    print("|---|---|" + "---:|" * len(args.budgets))
    for name, values in games.items():
        for est_name, est in ESTIMATORS.items():
            cells = [f"{rmse(values, est, b, args.seeds):.2e}" for b in args.budgets]
            print(f"| {name} | {est_name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
