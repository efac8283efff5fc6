"""Test concepts on a digits CNN with TCAV: stroke thickness, oriented bars and textures.

    python examples/concepts_digits.py            # under a minute on 2 CPU cores (weights cached)
    python examples/concepts_digits.py --quick    # fewer classes and random runs

Concept sets come from shipped data (`jaxplain.app.concepts`): digits with thicker or
thinner strokes (grey dilation / erosion), bars at 0, 45 and 90 degrees, and crops of
scikit-image's brick, grass and gravel photographs. For each tested class, TCAV reads the
concepts at a convolution and reports, per concept, the TCAV score and two p-values:
the two-sample t-test of Kim et al. and Captum's tutorial (`test="student"`), and the
test against fresh random concepts (`test="random_concepts"`). The first calls many
concepts significant, textures unrelated to digits included; the second, which asks
whether a concept's score could be that of a random set of digits, calls far fewer
(see `jaxplain/concepts/tcav.py`).

Writes examples/output/concepts_digits/tcav_class<k>.png and tcav.txt.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

import jaxplain as jx
from jaxplain import visualize as viz
from jaxplain.app import concepts, data, zoo
from jaxplain.app.cli import example_parser, parse_example_args

LAYER = "conv1"  # the last convolution at 16x16, before the pooling


def parse(argv, name):
    ap = example_parser(__doc__, Path(__file__).parent / "output" / name)
    return parse_example_args(ap, argv)


def main(argv=None) -> dict[str, Path]:
    args = parse(argv, "concepts_digits")
    q = args.quick
    model, ds = train(q)
    sets = concepts.digit_concepts(ds.x_train, n=30 if q else 40, seed=0)
    pool = ds.x_train[np.random.default_rng(1).choice(len(ds.x_train), 200, replace=False)]
    n_random = 10 if q else 20
    lines = [f"TCAV at {LAYER}, {n_random} random runs; p: two-sample t-test (Student) | "
             f"against random concepts", ""]
    out = {}
    for cls in ((1, 7) if q else (0, 1, 4, 7)):
        x = ds.x_test[ds.y_test == cls][:30]  # one shape for every class: one compile
        both = {}
        for test in ("student", "random_concepts"):
            both[test] = {name: jx.tcav(model, x, target=cls, layer=LAYER, concept_x=cx,
                                        random_x=pool, key=jax.random.key(cls), n_random=n_random,
                                        test=test)
                          for name, cx in sets.items()}
        lines += table(cls, both)
        fig = viz.plot_tcav(both["student"], title=f"class {cls}: TCAV at {LAYER} (Student t-test)")
        out[f"class_{cls}"] = viz.save(fig, args.out / f"tcav_class{cls}.png")
    (args.out / "tcav.txt").write_text("\n".join(lines) + "\n")
    out["table"] = args.out / "tcav.txt"
    print("\n".join(lines))
    print("wrote", ", ".join(str(p) for p in out.values()))
    return out


def train(q: bool):
    """The digits CNN of examples/digits_cnn.py (weights cached in ~/.cache/jaxplain)."""
    ds = data.load_digits(size=16)
    trained = zoo.train_classifier(
        zoo.SmallCNN((16, 32, 32), n_classes=10), ds.x_train, ds.y_train, ds.x_test, ds.y_test,
        epochs=4 if q else 10, lr=1e-2, cache=zoo.default_cache_dir())
    print(f"test accuracy {trained.accuracy:.1%}")
    return trained.model, ds


def table(cls: int, both: dict) -> list[str]:
    rows = [f"class {cls}", f"  {'concept':16s} {'score':>6s} {'random':>7s} {'CAV acc':>8s} "
            f"{'p (Student)':>12s} {'p (random concepts)':>20s}"]
    for name, r in both["student"].items():
        rc = both["random_concepts"][name]
        rows.append(f"  {name:16s} {float(r.score):6.2f} {float(np.mean(r.random_scores)):7.2f} "
                    f"{float(np.mean(r.accuracy)):8.2f} {_p(r.p_value):>12s} "
                    f"{_p(rc.p_value):>20s}")
    return rows + [""]


def _p(p) -> str:
    p = float(p)
    return f"{p:.2g}{' *' if p < 0.05 else '  '}"


if __name__ == "__main__":
    main()
