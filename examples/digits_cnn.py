"""Train a small Flax CNN on scikit-learn's digits, explain it with every method family,
score the explanations with the metrics, and save the figures.

    python examples/digits_cnn.py            # about a minute on 2 CPU cores
    python examples/digits_cnn.py --quick    # reduced budgets (or JAXPLAIN_QUICK=1)

Writes examples/output/digits_cnn/{attributions,segments,curves,class_visualization}.png
and metrics.txt.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain.app import data, zoo
from jaxplain import visualize as viz
from jaxplain.app.cli import example_parser, parse_example_args


def parse(argv, name):
    ap = example_parser(__doc__, Path(__file__).parent / "output" / name)
    return parse_example_args(ap, argv)


def centered(e):
    """An explanation minus its per-image mean."""
    v = e.values
    return e._replace(values=v - v.mean(axis=tuple(range(1, v.ndim)), keepdims=True))


def main(argv=None) -> dict[str, Path]:
    args = parse(argv, "digits_cnn")
    q = args.quick
    model, ds = train(q)
    x = jnp.asarray(ds.x_test[: 4 if q else 6])
    target = jnp.argmax(model(x), -1)  # explain the predicted classes
    key = jax.random.key(0)
    cells = jx.grid_segments(16, 16, 8)  # 64 features of 2x2 pixels
    methods = explainers(q, key, cells)
    results = {name: fn(model, x, target) for name, fn in methods.items()}
    ig = results["integrated gradients"]
    print("IG completeness gap (should be ~0):", np.round(np.asarray(ig.gap), 4))
    labels = [f"true {t}, pred {int(p)}" for t, p in zip(ds.y_test[: len(x)], target)]
    out = {
        "attributions": viz.save(
            viz.plot_attributions(x, results, labels=labels, cell=1.3),
            args.out / "attributions.png",
        )
    }
    # LIME weights of the 2x2 cells, with lime's top-k view.
    lime = jx.lime(
        model, x[:2], target=target[:2], segments=cells, key=key, n_samples=300 if q else 1000
    )
    out["segments"] = viz.save(
        viz.plot_segments(x[:2], cells, lime, top_k=8, titles=labels[:2]), args.out / "segments.png"
    )
    out.update(metrics(args, model, x, target, key, cells, methods, results))
    out["class_visualization"] = class_visualization(args, model, key)
    print("wrote", ", ".join(str(p) for p in out.values()))
    return out


def train(q: bool):
    """Digits upsampled to 16x16 and a 3-layer CNN trained with optax (weights cached in
    ~/.cache/jaxplain, so the second run skips training)."""
    ds = data.load_digits(size=16)
    trained = zoo.train_classifier(
        zoo.SmallCNN((16, 32, 32), n_classes=10),
        ds.x_train,
        ds.y_train,
        ds.x_test,
        ds.y_test,
        epochs=4 if q else 10,
        lr=1e-2,
        cache=zoo.default_cache_dir(),
    )
    print(f"test accuracy {trained.accuracy:.1%}")
    return trained.model, ds


def explainers(q: bool, key, cells) -> dict:
    """One call per method; every call returns an Explanation."""
    methods = {
        "saliency": lambda m, x, target: jx.saliency(m, x, target=target),
        "integrated gradients": lambda m, x, target: jx.integrated_gradients(
            m, x, target=target, steps=16 if q else 64
        ),
        "smoothgrad": lambda m, x, target: jx.smoothgrad(
            m, x, target=target, key=key, n_samples=16 if q else 50
        ),
        "guided backprop": lambda m, x, target: jx.guided_backprop(m, x, target=target),
        "gradient x input": lambda m, x, target: jx.gradient_x_input(m, x, target=target),
        # conv1, the last convolution at full resolution: on this flatten-head CNN the last
        # layer (conv2, after pooling) gives maps no better than random (see jaxplain demo).
        "Grad-CAM": lambda m, x, target: jx.grad_cam(m, x, target=target, layer="conv1"),
        "occlusion": lambda m, x, target: jx.occlusion(m, x, target=target, window=4, strides=2),
        # RISE scores sit around p(target); centre them to see what is above/below average.
        "RISE": lambda m, x, target: centered(
            jx.rise(m, x, target=target, key=key, n_masks=500 if q else 2000, cells=4)
        ),
        "KernelSHAP": lambda m, x, target: jx.to_pixels(
            jx.kernel_shap(
                m, x, target=target, segments=cells, key=key, n_samples=256 if q else 1000
            ).values,
            cells,
        ),
    }
    if q:  # the reduced CI mode keeps one or two methods per family
        drop = ("RISE", "gradient x input", "guided backprop")
        methods = {k: v for k, v in methods.items() if k not in drop}
    return methods


def metrics(args, model, x, target, key, cells, methods, results) -> dict[str, Path]:
    """Deletion/insertion curves (probabilities of the predicted class) and evaluate()."""
    kw = dict(target=target, steps=16, segments=cells)
    dele = {n: jx.deletion(model, x, r, **kw) for n, r in results.items()}
    ins = {n: jx.insertion(model, x, r, **kw) for n, r in results.items()}
    out = {"curves": viz.save(viz.plot_curves(deletion=dele, insertion=ins),
                              args.out / "curves.png")}
    names = ("deletion", "insertion") if args.quick else (
        "deletion", "insertion", "sparseness", "faithfulness_correlation")
    table = jx.evaluate(methods, model, x, target=target, key=key, segments=cells, metrics=names)
    (args.out / "metrics.txt").write_text(str(table))
    print(table)
    out["metrics"] = args.out / "metrics.txt"
    return out


def class_visualization(args, model, key) -> Path:
    """What the network thinks each class looks like (activation maximisation)."""
    fv = jx.feature_visualization(
        model, target=list(range(10)), key=key, image_shape=(16, 16, 1),
        steps=32 if args.quick else 256
    )
    return viz.save(
        viz.plot_feature_visualization(
            fv.images,
            titles=[f"class {k}" for k in range(10)],
            ncols=10,
            title="inputs that maximise each class logit",
        ),
        args.out / "class_visualization.png",
    )


if __name__ == "__main__":
    main()
