"""Train a 5-member ensemble on scikit-learn's digits and see where its members disagree,
about the class and about the explanation; then explain one member through its outputs
(counterfactuals, a decision plane, anchors).

    python examples/ensemble_digits.py            # about a minute on 2 CPU cores
    python examples/ensemble_digits.py --quick    # reduced budgets (or JAXPLAIN_QUICK=1)

Writes examples/output/ensemble_digits/{ensemble,counterfactuals,decision_plane,anchors}.png
and summary.txt.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain import visualize as viz
from jaxplain.app import data, zoo
from jaxplain.app.cli import example_parser, parse_example_args

MEMBERS = 5


def parse(argv, name):
    ap = example_parser(__doc__, Path(__file__).parent / "output" / name)
    return parse_example_args(ap, argv)


def train_members(ds, quick: bool):
    """Five SmallCNNs that differ only in their seed (initial weights, batch order)."""
    trained = [
        zoo.train_classifier(zoo.SmallCNN((8, 16), n_classes=10, pool_after=(0,)), ds.x_train,
                             ds.y_train, ds.x_test, ds.y_test, epochs=2 if quick else 6, lr=1e-2,
                             seed=seed, cache=zoo.default_cache_dir())
        for seed in range(MEMBERS)
    ]
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[t.variables for t in trained])
    return trained, stacked


def disagreement(outputs: np.ndarray) -> np.ndarray:
    """Per example, the share of members that do not vote for the majority class."""
    votes = outputs.argmax(-1)  # (M, N)
    counts = np.stack([(votes == k).sum(0) for k in range(outputs.shape[-1])])
    return 1.0 - counts.max(0) / votes.shape[0]


def main(argv=None) -> dict[str, Path]:
    args = parse(argv, "ensemble_digits")
    q = args.quick
    ds = data.load_digits(size=16)
    trained, stacked = train_members(ds, q)
    apply = trained[0].module.apply  # one architecture: the members differ in weights only
    lines = [f"member test accuracy: {', '.join(f'{t.accuracy:.1%}' for t in trained)}"]

    # 1. The prediction of every member on the test set, one compiled call.
    x_test = jnp.asarray(ds.x_test)
    pred = jx.to_numpy(jx.over_weights(None, apply, stacked, x_test))
    acc = float(np.mean(pred.predictive.argmax(-1) == ds.y_test))
    split = disagreement(pred.outputs)
    lines.append(f"ensemble (averaged softmax) accuracy: {acc:.1%}; members disagree on "
                 f"{int((split > 0).sum())} of {len(split)} test images")

    # 2. Where they disagree: saliency of every member for the ensemble's class.
    order = np.argsort(-split, kind="stable")
    pick = np.concatenate([order[:3], order[-2:]])  # most disputed, then two unanimous ones
    x = x_test[pick]
    target = pred.predictive[pick].argmax(-1)
    sal = jx.to_numpy(jx.over_weights(jx.integrated_gradients, apply, stacked, x,
                                      target=target, steps=16 if q else 32))
    spread = sal.std.sum(-1).mean((1, 2)) / np.abs(sal.mean.sum(-1)).mean((1, 2))
    lines.append("explanation spread (mean std / mean |mean| of the members' IG maps): "
                 + ", ".join(f"{s:.2f}" for s in spread)
                 + " (first three: disputed images, last two: unanimous)")
    out = {"ensemble": viz.save(viz.plot_ensemble(x, sal), args.out / "ensemble.png")}

    # 3. One member explained through its outputs: counterfactuals, a plane, anchors.
    cells = jx.grid_segments(16, 16, 4)  # 16 cells of 4x4 pixels
    views = viz.output_views(trained[0].model, x[:3], segments=cells, key=jax.random.key(0),
                             resolution=48 if q else 128, anchor_examples=2 if q else 3)
    for name, (fig, caption) in views.items():
        out[name] = viz.save(fig, args.out / f"{name}.png")
        lines.append(f"{name}: {caption}")

    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    out["summary"] = args.out / "summary.txt"
    print("\n".join(lines))
    print("wrote", ", ".join(str(p) for p in out.values()))
    return out


if __name__ == "__main__":
    main()
