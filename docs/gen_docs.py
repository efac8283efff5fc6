"""Writes the parts of the docs that come from the method registry.

    python docs/gen_docs.py           # rewrite them
    python docs/gen_docs.py --check   # exit 1 (and name the files) when one is stale

What it writes:

- the method table of `README.md` and of `docs/tutorials/choosing-a-method.md`,
  between `<!-- methods:start -->` and `<!-- methods:end -->`;
- the API reference pages `docs/api/*.md`, one per family, and their entries in
  the `nav` of `mkdocs.yml` (between `# api:start` and `# api:end`);
- the README's measured results, each between `<!-- NAME:start -->` and
  `<!-- NAME:end -->` (`RESULTS`): the sample-efficiency summary written by
  `python -m benchmarks.sample_efficiency --write` and the amortised explainer's
  summary (digits and Fashion-MNIST) written by `benchmarks/amortised_bench.py`, and
  the first table of the results that `examples/spurious_prior.py` writes.

Costs are the registry's own `evals` functions evaluated on one reference call
(`REFERENCE`), so the tables cannot drift from the code. `tests/test_docs.py`
checks that the committed files match this script's output and that every public
name of `jaxplain` sits on exactly one API page.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import jaxplain as jx  # noqa: E402
from jaxplain._core import registry  # noqa: E402

# One reference call: a 16 x 16 grey image cut into a 4 x 4 grid (d = 16 features),
# 8 reference images where a method averages over references.
REFERENCE = {
    "x": np.zeros((1, 16, 16, 1), np.float32),
    "segments": np.asarray(jx.grid_segments(16, 16, 4)),
    "references": np.zeros((8, 16, 16, 1), np.float32),
}
REFERENCE_TEXT = ("at the defaults, for one 16×16 image cut into d = 16 features "
                  "(a 4×4 grid) and 8 reference images")

CHOOSE = "docs/tutorials/choosing-a-method.md"
EFFICIENCY = "benchmarks/results/sample_efficiency_readme.md"
RESULTS = {  # README block -> (generated file, caption; None: the whole file is the block)
    "efficiency": (EFFICIENCY, None),
    "priors": ("benchmarks/results/spurious_prior.md",
               "Attribution priors ([`examples/spurious_prior.py`](examples/spurious_prior.py)): "
               "a corner mark gives the label away in training only "
               "([details](benchmarks/results/spurious_prior.md))."),
    # both datasets in one table, written by benchmarks/amortised_bench.py from its JSONs
    "amortised": ("benchmarks/results/amortised_bench_readme.md", None),
}
UNCOUNTED = ("A metric without a count calls no model (localisation, complexity, `ssim`) "
             "or calls your explanation method (robustness, sanity checks).")

ONE_EVAL = {
    "gradients": "a forward and a backward pass",
    "cam": "a forward pass and a backward pass to the layer",
    "layer": "a forward pass and a backward pass to the layer",
    "perturbation": "a forward pass",
    "shapley": "a forward pass",
    "outputs": "a forward pass (and a backward pass where a method follows the gradient)",
    "attention": "a forward pass (and a backward pass for the gradient-weighted rollout and "
                 "token Grad-CAM)",
    "metrics": "a forward pass",
    "concepts": "a forward pass and a backward pass to the layer (plus one forward pass per "
                "concept and random example, shared by the batch)",
    "training": "a forward pass of the model (an amortised explainer's own network pass is "
                "not counted)",
}

FAMILY_TITLES = {
    "gradients": "gradients", "cam": "CNN internals (CAM)", "layer": "layers and neurons",
    "perturbation": "perturbation", "shapley": "Shapley values", "metrics": "metrics",
    "outputs": "output explanations", "attention": "attention", "concepts": "concepts",
    "training": "learning with explanations",
}

# What the registry cannot say: how a method differs from a peer of the same name.
# `{here}` is the path of the choosing-a-method page from where the note is shown.
NOTES = {
    "deeplift": "rescale rule from the jaxpr; max pools route the change to the arg-max "
                "(as shap's DeepExplainer): summation-to-delta stays exact, unlike "
                "Captum's ([why]({here}#deeplift-and-max-pooling))",
    "deeplift_shap": "agrees with shap's DeepExplainer, also on max pools",
    "integrated_gradients": "`rule=` Gauss-Legendre or Riemann; completeness `gap`",
    "lrp": "rules in `jx.relevance`; conservation `gap`",
    "kernel_shap": "exact efficiency; coalition sizes sampled by leverage score "
                   "(`sampling=`)",
    "rise": "`sampling=` antithetic or lattice masks cut the error 2-3x",
    "shapley_sampling": "antithetic permutations, `stderr`",
    "amortised_shap": "FastSHAP: a trained explainer network (`fit_amortised`), exact "
                      "efficiency",
}

# The API pages: (file, title, what the page covers, registry families, other public names).
PAGES = [
    ("gradients", "Gradients", "Gradient methods, DeepLIFT, LRP and its rules.",
     ("gradients",), ("with_relu_rule", "relevance")),
    ("cnn-internals", "CNN internals and layers",
     "Grad-CAM, attributions to a layer or a neuron, feature maps, filters and "
     "activation maximisation.",
     ("cam", "layer"), ("neurons", "feature_maps", "filters", "feature_visualization",
                        "FeatureVisualization", "tile", "tile_maps")),
    ("perturbation", "Perturbation",
     "Occlusion, feature ablation, RISE, LIME, the features they perturb and the "
     "global views.",
     ("perturbation",), ("grid_segments", "pixel_segments", "superpixels", "to_pixels",
                         "apply_coalitions", "resolve_baseline", "gaussian_blur",
                         "global_importance", "global_surrogate", "GlobalImportance",
                         "Surrogate")),
    ("shapley", "Shapley values", "KernelSHAP, permutation sampling and exact enumeration.",
     ("shapley",), ()),
    ("attention", "Attention models",
     "Explaining attention models (a Flax vision transformer, or any model computing "
     "softmax(q k^T)): attention maps per layer and head, attention rollout, "
     "gradient-weighted rollout, Grad-CAM on the token grid, and patches as features for "
     "LIME, KernelSHAP and Shapley values. Attention weights are read from the model's "
     "program without editing it.",
     ("attention",), ("attention_layers", "capture_attention", "patch_segments")),
    ("outputs", "Output explanations",
     "Explaining a model through its outputs: counterfactuals, decision planes, anchors "
     "and explanations over an ensemble of weights.",
     ("outputs",), ("Counterfactual", "Plane", "Anchor", "over_weights", "OverWeights")),
    ("concepts", "Concepts", "Concept-level explanations: concept activation vectors and "
     "TCAV, which tests whether a concept given by examples matters to a class.",
     ("concepts",), ("concept_activation_vector", "CAV", "TCAVResult")),
    ("training", "Learning with explanations",
     "`jaxplain.training`: attribution priors as loss terms and an optax training step "
     "(see [Explanations in training](../guides/training.md)), and amortised Shapley "
     "values (FastSHAP): an explainer network trained against the model's masked "
     "evaluations returns Shapley values over segments in one forward pass (measured "
     "against KernelSHAP in [Amortised Shapley values](../guides/amortised.md)).",
     ("training",), ("training", "fit_amortised", "AmortisedFit", "AmortisedExplainer")),
    ("metrics", "Metrics", "Evaluating explanations: faithfulness, robustness, "
     "localisation, complexity and sanity checks.",
     ("metrics",), ("evaluate", "MetricTable", "Curve", "RandomisationResult")),
    ("cost", "Cost", "What a call will cost before it runs: model evaluations, chunks, peak "
     "memory, FLOPs and time, from one chunk compiled and timed on your device.",
     (), ("plan", "Plan")),
    ("pipeline", "Pipeline", "Explaining whole datasets: streaming, shards, resume, devices.",
     (), ("explain_dataset", "explain_to_shards", "load_results", "RunSummary",
          "enable_compilation_cache")),
    ("visualize", "Visualize", "`jaxplain.visualize`: plots (matplotlib) and the NumPy "
     "adapter behind them.", (), ("visualize",)),
    ("models-and-types", "Models and types",
     "Turning a Flax module or a JAX function into a model, targets, the result type "
     "and the test helpers.",
     (), ("Model", "from_linen", "from_nnx", "from_callable", "as_model", "Target",
          "as_target", "Explanation", "to_numpy", "testing")),
    ("config", "Config", "Process-wide settings (today: the XLA:CPU rewrites, see "
     "[GPU and TPU](../guides/accelerators.md)). `jaxplain.config` is the one instance "
     "of this class.",
     (), ("config",)),
]

# Public modules (and the config object) documented through chosen members.
MEMBERS = {
    "training": ("jaxplain.training", ("attribution_penalty", "AttributionPenalty", "train_step",
                                        "prior_loss", "cross_entropy", "attribution_mass",
                                        "log_prob_sum")),
    "relevance": ("jaxplain.relevance", ("Epsilon", "Gamma", "AlphaBeta", "ZPlus", "ZBox",
                                          "epsilon_gamma_box", "epsilon_plus", "layers",
                                          "Layer")),
    "visualize": ("jaxplain.visualize", (
        "plot_attributions", "overlay", "plot_segments", "plot_curves", "plot_feature_maps",
        "plot_filters", "plot_feature_visualization", "plot_importance", "plot_benchmark",
        "plot_decision_plane", "plot_counterfactual", "plot_anchor", "plot_ensemble",
        "plot_tcav",
        "save", "to_numpy", "to_image", "to_gray", "reduce_channels", "normalize",
        "feature_map", "upsample", "blend")),
    "testing": ("jaxplain.testing", ("tiny_cnn", "tiny_cnn_nnx", "tiny_attention",
                                      "random_images", "linear_model", "count_compiles")),
    "config": ("jaxplain._compile.switch.Config", None),
}


PROGRESS = ("Every function on this page that runs the model also takes `progress=`, "
            "added by the method registry: `\"auto\"` (the default) shows a progress bar "
            "for calls long enough to need one, `True` always, `False` never.")


class _Reads(dict):
    """The bound arguments, recording which ones an `evals` function reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: list[str] = []

    def __getitem__(self, k):
        if k not in self.read:
            self.read.append(k)
        return super().__getitem__(k)


def cost(entry: registry.Entry) -> tuple[int | None, tuple[str, ...]]:
    """Model evaluations per example of the reference call, and the arguments they read."""
    if entry.evals is None:
        return None, ()
    args = _Reads({p.name: p.default for p in entry.signature.parameters.values()
                   if p.default is not inspect.Parameter.empty})
    args.update({k: v for k, v in REFERENCE.items() if k in entry.signature.parameters})
    args.setdefault("method_kwargs", {})
    n = int(np.max(entry.evals(args)))  # (N,) where chunks repeat rows: none for one image
    return n, tuple(k for k in args.read if k not in ("x", "method_kwargs", "batch_size"))


def _cost_text(entry: registry.Entry) -> str:
    n, reads = cost(entry)
    if n is None:
        return ""
    grows = ", ".join(f"`{k}`" for k in reads)
    return f"{n}" + (f" ({grows})" if grows else "")


def summary(entry: registry.Entry) -> str:
    """The first paragraph of the method's docstring, on one line."""
    doc = inspect.cleandoc(entry.fn.__doc__ or entry.summary)
    return " ".join(doc.split("\n\n")[0].split())


def full_table() -> str:
    """The table of every registered method, for the docs."""
    out = [f"Model evaluations per example are {REFERENCE_TEXT}; in brackets the "
           "arguments the count grows with. One evaluation is a forward pass, plus a "
           f"backward pass for the gradient families. {UNCOUNTED} Generated from the "
           "registry by `docs/gen_docs.py`.", ""]
    for family in registry.FAMILIES:
        rows = registry.entries(family)
        if not rows:
            continue
        out += [f"### {FAMILY_TITLES.get(family, family)}", "",
                f"One evaluation: {ONE_EVAL.get(family, 'a forward pass')}.", "",
                "| method | what it computes | needs `key` | evaluations per example |",
                "|---|---|:-:|---:|"]
        for e in rows:
            note = NOTES.get(e.name, "").format(here="")
            text = (summary(e) + (f" *{note}.*" if note else "")).replace("|", "\\|")
            out.append(f"| [`{e.name}`](../api/{_page_of(e.name)}.md#jaxplain.{e.name}) "
                       f"| {text} | {'yes' if e.stochastic else ''} | {_cost_text(e)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def readme_table() -> str:
    """The compact method table of the README: one row per family."""
    out = ["| family | methods: model evaluations per example | notes |", "|---|---|---|"]
    for family in registry.FAMILIES:
        rows = registry.entries(family)
        if not rows:
            continue
        cells = "; ".join(f"`{e.name}` {_cost_text(e)}".rstrip() for e in rows)
        notes = "<br>".join(f"`{e.name}`: " + NOTES[e.name].format(here=CHOOSE)
                          for e in rows if e.name in NOTES)
        out.append(f"| {FAMILY_TITLES.get(family, family)} | {cells} | {notes} |")
    out += ["", f"Counts are {REFERENCE_TEXT}; in brackets what they grow with. {UNCOUNTED} "
            "The full table, with what each method computes, is in [choosing a method]"
            f"({CHOOSE})."]
    return "\n".join(out) + "\n"


def _page_of(name: str) -> str:
    for slug, _, _, families, extra in _pages():
        if name in extra or (name in registry.REGISTRY
                             and registry.REGISTRY[name].family in families):
            return slug
    raise KeyError(name)


def _pages():
    """`PAGES`, plus one page for each registered family no page covers."""
    covered = {f for page in PAGES for f in page[3]}
    extra = [(f, FAMILY_TITLES.get(f, f.capitalize()), f"The `{f}` family.", (f,), ())
             for f in registry.FAMILIES if f not in covered and registry.entries(f)]
    return PAGES + extra


def api_pages() -> dict[str, str]:
    """`{relative path: text}` of the API reference pages."""
    pages = {}
    for slug, title, about, families, extra in _pages():
        lines = ["<!-- generated by docs/gen_docs.py from the registry; edit that -->",
                 f"# {title}", "", about, ""]
        if families:
            lines += [PROGRESS, ""]
        for e in registry.entries(*families) if families else []:
            lines += [f"::: jaxplain.{e.name}", ""]
        for name in extra:
            path, members = MEMBERS.get(name, (f"jaxplain.{name}", None))
            if members is None:
                lines += [f"::: {path}", ""]
            else:
                lines += [f"## `jaxplain.{name}`", "", f"::: {path}", "    options:",
                          "      show_root_heading: false", "      members:"]
                lines += [f"        - {m}" for m in members] + [""]
        pages[f"docs/api/{slug}.md"] = "\n".join(lines).rstrip() + "\n"
    return pages


def api_nav() -> str:
    return "".join(f"      - {title}: api/{slug}.md\n" for slug, title, *_ in _pages())


def documented_names() -> list[str]:
    """Every `jaxplain.<name>` the API pages document (with repeats, if any)."""
    names = []
    for _, _, _, families, extra in _pages():
        names += [e.name for e in registry.entries(*families)] if families else []
        names += list(extra)
    return names


def splice(text: str, start: str, end: str, body: str, where: str) -> str:
    """`text` with everything between the marker lines `start` and `end` replaced."""
    pattern = re.compile(rf"({re.escape(start)}[^\n]*\n)(.*?)(^[^\n]*{re.escape(end)})",
                         re.S | re.M)
    if not pattern.search(text):
        raise ValueError(f"{where}: expected the markers {start!r} ... {end!r}")
    return pattern.sub(lambda m: m.group(1) + body + m.group(3), text, count=1)


def first_table(text: str) -> str:
    """The first Markdown table of `text` (its consecutive `|` lines)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def result_block(name: str) -> str:
    path, caption = RESULTS[name]
    text = (ROOT / path).read_text()
    return text if caption is None else caption + "\n\n" + first_table(text)


def outputs() -> dict[str, str]:
    """`{relative path: text}` of every file this script writes."""
    files = {}
    readme = (ROOT / "README.md").read_text()
    readme = splice(readme, "<!-- methods:start -->", "<!-- methods:end -->",
                    readme_table(), "README.md")
    for name in RESULTS:
        readme = splice(readme, f"<!-- {name}:start -->", f"<!-- {name}:end -->",
                        result_block(name), "README.md")
    files["README.md"] = readme
    files[CHOOSE] = splice((ROOT / CHOOSE).read_text(), "<!-- methods:start -->",
                           "<!-- methods:end -->", full_table(), CHOOSE)
    files["mkdocs.yml"] = splice((ROOT / "mkdocs.yml").read_text(), "# api:start", "# api:end",
                                 api_nav(), "mkdocs.yml")
    files.update(api_pages())
    return files


def stale() -> list[str]:
    """The files whose committed text differs from what this script writes."""
    return [p for p, text in outputs().items()
            if not (ROOT / p).is_file() or (ROOT / p).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for p in bad:
            print(f"stale: {p} (run: python docs/gen_docs.py)")
        return 1 if bad else 0
    for p, text in outputs().items():
        path = ROOT / p
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
