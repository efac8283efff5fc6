"""TCAV against a reference built the way Captum's TCAV computes it (NumPy, scikit-learn).

    python -m benchmarks.tcav_reference [--quick] [--out benchmarks/results]

Captum and torch are not installed here, so Captum's own `TCAV` cannot run on twin
weights. The reference redoes its pipeline independently of jaxplain's TCAV code:

- activations at `conv1` from `jax.lax` convolutions on the digits CNN's weights, and
  the class logit's gradient there from `jax.grad` of the layers above, written out
  by hand (no jaxplain layer access);
- CAVs from Captum's default classifier: scikit-learn's `SGDClassifier(alpha=0.01,
  max_iter=1000, tol=1e-3)` on a shuffled 67/33 train/test split; and, to tell the
  classifier's share of a difference from the rest of the pipeline's, from
  scikit-learn's `LogisticRegression` with jaxplain's objective;
- TCAV score = fraction of positive directional derivatives; random runs pair
  random set 0 with random set i (Captum's tutorial), and `scipy.stats.ttest_ind`
  gives the p-value.

Random sets are drawn independently on each side, so the two agree within sampling
error, not to round-off: the table reports each side's mean score over the runs,
the difference in standard errors (|z| < 3 is agreement), and both p-values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain.app import concepts, data, zoo

LAYER, CLASS = "conv1", 7


def reference_parts(variables):
    """`(features, head)`: conv1's output from images, and the logits from it (SmallCNN)."""
    p = variables["params"]

    def conv(x, name):
        k = p[name]["kernel"]
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p[name]["bias"]

    def features(x):
        return conv(jax.nn.relu(conv(x, "conv0")), "conv1")

    def head(a):
        h = jax.nn.relu(a)
        n, hh, ww, c = h.shape
        h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))
        h = jax.nn.relu(conv(h, "conv2")).reshape(n, -1)
        return h @ p["head"]["kernel"] + p["head"]["bias"]

    return jax.jit(features), jax.jit(head)


def _classifier(kind: str, n: int, rng):
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if kind == "sgd":  # Captum's DefaultClassifier
        return lambda X: SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3,
                                       random_state=int(rng.integers(1 << 30)))
    # jaxplain's objective: mean log-loss + 0.01 * s / 2 * |w|^2, s = mean squared spread
    return lambda X: LogisticRegression(
        C=1.0 / (0.01 * len(X) * np.mean(np.sum((X - X.mean(0)) ** 2, 1))), max_iter=5000)


def reference_tcav(features, head, x, concept_x, pool, n_random, seed, kind="sgd"):
    """Captum's pipeline: `(concept scores, random scores, p-value, concept CAV accuracy)`;
    `kind="sgd"` is Captum's default classifier, `"logistic"` scikit-learn's logistic
    regression with jaxplain's objective."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
    acts_c, acts_p = flat(features(concept_x)), flat(features(pool))
    grads = flat(jax.grad(lambda a: jnp.sum(head(a)[:, CLASS]))(features(x)))
    m = len(acts_c)
    make = _classifier(kind, m, rng)
    sets = [acts_p[rng.choice(len(acts_p), m, replace=False)] for _ in range(n_random + 1)]

    def run(pos, neg):
        X, y = np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        order = rng.permutation(len(X))
        n_test = int(0.33 * len(X))
        te, tr = order[:n_test], order[n_test:]
        clf = make(X[tr]).fit(X[tr], y[tr])
        cav = clf.coef_[0]  # towards class 1, the concept
        return float(np.mean(grads @ cav > 0)), float(clf.score(X[te], y[te]))

    concept = [run(acts_c, s) for s in sets[1:]]
    rand = [run(sets[0], s) for s in sets[1:]]
    scores, randoms = np.array([c[0] for c in concept]), np.array([r[0] for r in rand])
    return scores, randoms, float(stats.ttest_ind(scores, randoms).pvalue), np.mean(
        [c[1] for c in concept])


def compare(quick: bool = False, seed: int = 0) -> dict:
    ds = data.load_digits(size=16)
    trained = zoo.train_classifier(zoo.SmallCNN((16, 32, 32), n_classes=10), ds.x_train,
                                   ds.y_train, ds.x_test, ds.y_test, epochs=10, lr=1e-2,
                                   cache=zoo.default_cache_dir())
    features, head = reference_parts(trained.variables)
    sets = concepts.digit_concepts(ds.x_train, n=40, seed=seed)
    if quick:
        sets = {k: sets[k] for k in ("thick strokes", "thin strokes", "brick")}
    pool = ds.x_train[np.random.default_rng(seed + 1).choice(len(ds.x_train), 200, False)]
    x = ds.x_test[ds.y_test == CLASS][:30]
    n_random = 10 if quick else 20
    rows = []
    for name, cx in sets.items():
        t0 = time.perf_counter()
        ours = jx.tcav(trained.model, x, target=CLASS, layer=LAYER, concept_x=cx, random_x=pool,
                       key=jax.random.key(seed), n_random=n_random)
        ref = reference_tcav(features, head, x, cx, pool, n_random, seed)
        same = reference_tcav(features, head, x, cx, pool, n_random, seed, kind="logistic")
        a = np.asarray(ours.scores)
        rows.append(dict(concept=name, jaxplain=float(a.mean()), reference=float(ref[0].mean()),
                         z=_z(a, ref[0]), reference_logistic=float(same[0].mean()),
                         z_logistic=_z(a, same[0]),
                         jaxplain_random=float(np.mean(ours.random_scores)),
                         reference_random=float(ref[1].mean()), p_jaxplain=float(ours.p_value),
                         p_reference=ref[2], acc_jaxplain=float(np.mean(ours.accuracy)),
                         acc_reference=float(ref[3]), seconds=time.perf_counter() - t0))
    return dict(layer=LAYER, target=CLASS, n_random=n_random, n_inputs=len(x),
                accuracy=trained.accuracy, rows=rows)


def _z(a: np.ndarray, b: np.ndarray) -> float:
    """The difference of the mean scores in standard errors of that difference."""
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    if se == 0:
        return 0.0 if a.mean() == b.mean() else float("inf")
    return float((a.mean() - b.mean()) / se)


def table(res: dict) -> str:
    head = ("| concept | score jaxplain | score reference (SGD) | z | score reference "
            "(logistic) | z | random jaxplain | random reference | p jaxplain | p reference | "
            "CAV acc jaxplain | CAV acc reference |")
    lines = [head, "|" + "---|" * 12]
    for r in res["rows"]:
        lines.append(f"| {r['concept']} | {r['jaxplain']:.2f} | {r['reference']:.2f} | "
                     f"{r['z']:+.1f} | {r['reference_logistic']:.2f} | {r['z_logistic']:+.1f} | "
                     f"{r['jaxplain_random']:.2f} | {r['reference_random']:.2f} "
                     f"| {r['p_jaxplain']:.2g} | {r['p_reference']:.2g} | "
                     f"{r['acc_jaxplain']:.2f} | {r['acc_reference']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    res = compare(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tcav_reference.json").write_text(json.dumps(res, indent=1))
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
