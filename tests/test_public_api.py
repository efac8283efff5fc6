"""The public namespace is pinned: adding or removing a name is a deliberate change."""

import jaxplain as jx

PUBLIC = [  # everything but the registered methods (`jaxplain._core.registry`)
    "AmortisedExplainer",
    "AmortisedFit",
    "Anchor",
    "CAV",
    "Counterfactual",
    "Curve",
    "Explanation",
    "FeatureVisualization",
    "GlobalImportance",
    "MetricTable",
    "Model",
    "OverWeights",
    "Plan",
    "Plane",
    "RandomisationResult",
    "RunSummary",
    "Surrogate",
    "TCAVResult",
    "Target",
    "apply_coalitions",
    "as_model",
    "as_target",
    "attention_layers",
    "capture_attention",
    "concept_activation_vector",
    "config",
    "enable_compilation_cache",
    "evaluate",
    "explain_dataset",
    "explain_to_shards",
    "feature_maps",
    "feature_visualization",
    "filters",
    "fit_amortised",
    "from_callable",
    "from_linen",
    "from_nnx",
    "gaussian_blur",
    "global_importance",
    "global_surrogate",
    "grid_segments",
    "load_results",
    "neurons",
    "over_weights",
    "patch_segments",
    "pixel_segments",
    "plan",
    "relevance",
    "resolve_baseline",
    "superpixels",
    "testing",
    "tile",
    "tile_maps",
    "to_numpy",
    "to_pixels",
    "training",
    "visualize",
    "with_relu_rule",
]


def test_public_names_are_pinned():
    from jaxplain._core.registry import REGISTRY

    assert sorted(jx.__all__) == sorted(set(PUBLIC) | set(REGISTRY))
    assert len(jx.__all__) == len(set(jx.__all__))
    for name, entry in REGISTRY.items():
        assert getattr(jx, name) is entry.fn, name


TRAINING = ["AmortisedExplainer", "AmortisedFit", "AttributionPenalty", "METHODS",
            "attribution_mass", "attribution_penalty", "cross_entropy", "fit_amortised",
            "log_prob_sum", "prior_loss", "train_step"]


def test_training_names_are_pinned():
    public = sorted(n for n in vars(jx.training) if not n.startswith("_")
                    and n not in ("priors", "amortised"))  # the modules
    assert public == sorted(TRAINING)
    for name in TRAINING:
        assert getattr(jx.training, name).__doc__ or name == "METHODS", name


def test_every_public_name_resolves_and_is_documented():
    for name in jx.__all__:
        obj = getattr(jx, name)
        assert obj.__doc__, name


def test_importing_jaxplain_loads_no_peer_and_no_matplotlib():
    import subprocess
    import sys

    code = (
        "import sys, jaxplain; "
        "print([m for m in ('torch', 'captum', 'shap', 'lime', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_jaxplain_initialises_no_backend():
    """Users may still pick platforms or XLA flags after `import jaxplain`."""
    import subprocess
    import sys

    code = "import jaxplain; from jax._src import xla_bridge as xb; print(bool(xb._backends))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
