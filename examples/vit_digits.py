"""Explain a small Flax vision transformer: attention maps, rollout, gradient-weighted
rollout, Grad-CAM on the token grid, and patches as features for KernelSHAP.

    python examples/vit_digits.py            # about a minute on 2 CPU cores (training cached)
    python examples/vit_digits.py --quick    # reduced budgets (or JAXPLAIN_QUICK=1)

The ViT (`jaxplain.app.vit`) trains on Fashion-MNIST when Debian's
`dataset-fashion-mnist` is installed, else on scikit-learn's digits. Writes
examples/output/vit_digits/{attention,attributions}.png and faithfulness.txt.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain import visualize as viz
from jaxplain.app import zoo
from jaxplain.app.cli import example_parser, parse_example_args


def main(argv=None) -> dict[str, Path]:
    ap = example_parser(__doc__, Path(__file__).parent / "output" / "vit_digits")
    args = parse_example_args(ap, argv)
    q = args.quick
    # --quick trains 4 epochs, as the demo's --quick does, so the two share the cached weights
    trained, ds = zoo.vit_classifier(epochs=4 if q else None, cache=zoo.default_cache_dir())
    print(f"{ds.name}: test accuracy {trained.accuracy:.1%} ({trained.seconds:.0f} s"
          f"{', cached' if trained.cached else ''})")
    model = trained.model
    x = jnp.asarray(ds.x_test[:4])
    target = jnp.argmax(model(x), -1)
    patches = jx.patch_segments(x.shape[1], x.shape[2], trained.module.patch)
    print("attention layers:", jx.attention_layers(model, x))

    # What the class token attends to, per layer and head (first image).
    maps = np.asarray(jx.attention_maps(model, x).values)  # (N, layers, heads, T, T)
    rows = {f"layer {l} head {h}": maps[:1, l, h, 0, 1:]
            for l in range(maps.shape[1]) for h in range(maps.shape[2])}
    out = {"attention": viz.save(viz.plot_attributions(x[:1], rows, segments=patches,
                                                       sign="absolute", cell=1.3),
                                 args.out / "attention.png")}

    key = jax.random.key(0)
    results = {
        "rollout": jx.attention_rollout(model, x),
        "grad rollout": jx.grad_attention_rollout(model, x, target=target),
        "token Grad-CAM": jx.token_grad_cam(model, x, target=target, layer="block1/norm1"),
        "KernelSHAP (patches)": jx.kernel_shap(model, x, target=target, segments=patches,
                                               key=key, n_samples=128 if q else 1024),
        "integrated gradients": jx.integrated_gradients(model, x, target=target,
                                                        steps=16 if q else 64),
    }
    labels = [f"true {ds.classes[t]}, pred {ds.classes[int(p)]}"
              for t, p in zip(ds.y_test[:4], target)]
    out["attributions"] = viz.save(
        viz.plot_attributions(x, results, labels=labels, segments=patches, cell=1.3),
        args.out / "attributions.png")

    lines = ["deletion / insertion AUC over patches (lower / higher is better):"]
    for name, r in results.items():
        d = jx.deletion(model, x, r, target=target, segments=patches, steps=16)
        i = jx.insertion(model, x, r, target=target, segments=patches, steps=16)
        lines.append(f"  {name:22s} {float(d.auc.mean()):.3f} / {float(i.auc.mean()):.3f}")
    (args.out / "faithfulness.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    out["faithfulness"] = args.out / "faithfulness.txt"
    print("wrote", ", ".join(str(p) for p in out.values()))
    return out


if __name__ == "__main__":
    main()
