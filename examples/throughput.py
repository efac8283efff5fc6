"""High throughput: explain a whole dataset, report images/second and the ratio to the
physical limit, and aggregate the explanations into a global per-class view.

    python examples/throughput.py [--quick] [--out DIR] [--images N]

Uses Fashion-MNIST (70 000 images, 28x28, MIT licence) when Debian's
`dataset-fashion-mnist` package is installed (`apt-get install dataset-fashion-mnist`,
files under /usr/share/datasets/fashion-mnist), and scikit-learn's digits otherwise.

The physical limit is the time the same number of model evaluations (forward +
backward passes) takes as plain jitted batches of the same size: the cost of the
arithmetic with nothing else around it. A ratio near 1 means the explainer adds
next to no overhead.
"""

from __future__ import annotations

import time
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
    ap.add_argument("--images", type=int, default=None, help="explain only the first N test images")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return parse_example_args(ap, argv)


def limit_seconds(model, x: np.ndarray, n_evals: int, chunk: int, repeats: int = 3) -> float:
    """Seconds for `n_evals` forward+backward passes in jitted batches of `chunk` inputs."""
    chunk = min(chunk, n_evals)
    xb = jnp.asarray(np.resize(x, (chunk,) + x.shape[1:]))
    grad = jax.jit(jax.grad(lambda z, m: jnp.sum(jnp.max(m(z), axis=-1))))
    grad(xb, model).block_until_ready()
    best = min(_timed(lambda: grad(xb, model).block_until_ready()) for _ in range(repeats))
    return best * n_evals / chunk


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> dict[str, Path]:
    args = parse(argv, "throughput")
    q = args.quick
    ds = data.load_throughput_dataset()
    print(
        f"dataset: {ds.name}, {len(ds.x_train)} train / {len(ds.x_test)} test images "
        f"{ds.x_train.shape[1]}x{ds.x_train.shape[2]}"
    )
    n_train = 2000 if q else 20000
    trained = zoo.train_classifier(
        zoo.SmallCNN((16, 32, 32), n_classes=len(ds.classes)),
        ds.x_train[:n_train],
        ds.y_train[:n_train],
        ds.x_test[:2000],
        ds.y_test[:2000],
        epochs=1 if q else 4,
        lr=5e-3,
        cache=zoo.default_cache_dir(),
    )
    model = trained.model
    print(f"test accuracy {trained.accuracy:.1%}")

    n = args.images or (256 if q else len(ds.x_test))
    x = ds.x_test[:n]
    steps, batch = 8, 64 if q else 128
    # explain_dataset pads the last batch, so the whole run compiles once. One chunk of
    # batch * steps model inputs per call (eval_batch_size) runs the batch as one jitted
    # program with no loop around the model (XLA on CPU runs convolutions inside loops slower).
    t0 = time.perf_counter()
    parts = []
    for e in jx.explain_dataset(
        jx.integrated_gradients,
        model,
        x,
        batch_size=batch,
        target="predicted",
        steps=steps,
        eval_batch_size=batch * steps,
        progress=not args.quiet,
    ):
        parts.append(np.asarray(e.values).sum(-1))  # (b, H, W): channels summed
    seconds = time.perf_counter() - t0
    attr = np.concatenate(parts)
    n_evals = n * (steps + 1)  # steps fwd+bwd per image, plus the forward for "predicted"
    limit = limit_seconds(model, x, n_evals, chunk=batch * steps)
    ips = n / seconds
    lines = [
        f"dataset            {ds.name} ({n} images explained)",
        f"method             integrated gradients, {steps} steps, batches of {batch}",
        f"wall time          {seconds:.2f} s (including compilation)",
        f"throughput         {ips:.0f} images/s, {n_evals / seconds:.0f} model evaluations/s",
        f"physical limit     {limit:.2f} s for {n_evals} forward+backward passes",
        f"ratio to limit     {seconds / limit:.2f}x",
    ]
    print("\n".join(lines))
    (args.out / "throughput.txt").write_text("\n".join(lines) + "\n")

    preds = np.asarray(jnp.argmax(model(jnp.asarray(x)), -1))
    gi = jx.global_importance(attr, preds, n_classes=len(ds.classes))
    counts = np.asarray(gi.counts)
    fig = viz.plot_importance(
        gi.per_class,
        titles=[f"{c} ({k})" for c, k in zip(ds.classes, counts)],
        title=f"mean |integrated gradients| per predicted class, {n} {ds.name} images",
    )
    out = {
        "report": args.out / "throughput.txt",
        "global": viz.save(fig, args.out / "global_importance.png"),
    }
    print("wrote", ", ".join(str(p) for p in out.values()))
    return out


if __name__ == "__main__":
    main()
