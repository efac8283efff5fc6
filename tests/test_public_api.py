"""The public namespace is pinned: adding or removing a name is a deliberate change."""

import jaxplain as jx

PUBLIC = [
    "Curve",
    "Explanation",
    "FeatureVisualization",
    "GlobalImportance",
    "MetricTable",
    "Model",
    "RandomisationResult",
    "RunSummary",
    "Surrogate",
    "Target",
    "apply_coalitions",
    "as_model",
    "as_target",
    "avg_sensitivity",
    "completeness_gap",
    "config",
    "complexity",
    "deconvnet",
    "deeplift",
    "deeplift_shap",
    "lrp",
    "relevance",
    "deletion",
    "efficiency_gap",
    "enable_compilation_cache",
    "evaluate",
    "exact_shapley",
    "expected_gradients",
    "explain_dataset",
    "faithfulness_correlation",
    "feature_ablation",
    "feature_maps",
    "feature_visualization",
    "filters",
    "from_callable",
    "from_linen",
    "from_nnx",
    "gaussian_blur",
    "global_importance",
    "global_surrogate",
    "grad_cam",
    "grad_cam_plus_plus",
    "guided_grad_cam",
    "gradient_x_input",
    "grid_segments",
    "guided_backprop",
    "infidelity",
    "insertion",
    "integrated_gradients",
    "internal_influence",
    "neuron_conductance",
    "kernel_shap",
    "layer_activations",
    "layer_conductance",
    "layer_gradient_x_activation",
    "layer_integrated_gradients",
    "lime",
    "load_results",
    "local_lipschitz_estimate",
    "max_sensitivity",
    "model_parameter_randomisation",
    "monotonicity",
    "neurons",
    "noise_tunnel",
    "occlusion",
    "pixel_segments",
    "pointing_game",
    "random_logit",
    "relevance_mass",
    "relevance_rank_accuracy",
    "resolve_baseline",
    "rise",
    "road",
    "saliency",
    "shapley_sampling",
    "smoothgrad",
    "sparseness",
    "squaregrad",
    "ssim",
    "superpixels",
    "testing",
    "tile",
    "tile_maps",
    "to_numpy",
    "to_pixels",
    "vargrad",
    "visualize",
    "with_relu_rule",
]


def test_public_names_are_pinned():
    assert sorted(jx.__all__) == sorted(PUBLIC)


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
