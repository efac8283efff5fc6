"""jaxplain: a JAX-native attribution engine for Flax models and any JAX function.

Every method is a pure function `method(model, x, *, target, ...) -> Explanation`.
Import the flat namespace: `import jaxplain as jx; jx.integrated_gradients(...)`.
"""

# Each section re-exports one module; keep one symbol per line and add it to
# __all__ below (tests/test_public_api.py pins the list).

# --- settings -------------------------------------------------------------------------
from ._compile import config as config

# --- types and adapters --------------------------------------------------------------
from ._core.types import Explanation as Explanation
from ._core.types import to_numpy as to_numpy
from ._core.models import Model as Model
from ._core.models import as_model as as_model
from ._core.models import from_callable as from_callable
from ._core.models import from_linen as from_linen
from ._core.models import from_nnx as from_nnx
from ._core.targets import Target as Target
from ._core.targets import as_target as as_target
from . import testing as testing

# --- features ---------------------------------------------------------------------------
from ._core.features import apply_coalitions as apply_coalitions
from ._core.features import grid_segments as grid_segments
from ._core.features import pixel_segments as pixel_segments

# --- gradients ---------------------------------------------------------------------------
from .gradients.basic import deconvnet as deconvnet
from .gradients.deeplift import deeplift as deeplift
from .gradients.deeplift import deeplift_shap as deeplift_shap
from .gradients.sampled import expected_gradients as expected_gradients
from .gradients.basic import gradient_x_input as gradient_x_input
from .gradients.basic import guided_backprop as guided_backprop
from .gradients.basic import integrated_gradients as integrated_gradients
from .gradients.sampled import noise_tunnel as noise_tunnel
from .gradients.basic import saliency as saliency
from .gradients.sampled import smoothgrad as smoothgrad
from .gradients.sampled import squaregrad as squaregrad
from .gradients.sampled import vargrad as vargrad
from .gradients.basic import with_relu_rule as with_relu_rule
from .gradients.relevance import lrp as lrp
from .gradients import relevance as relevance

# --- cam / layers --------------------------------------------------------------------------
from .gradients.cam import grad_cam as grad_cam
from .gradients.cam import grad_cam_plus_plus as grad_cam_plus_plus
from .gradients.cam import guided_grad_cam as guided_grad_cam
from .gradients.layer import layer_activations as layer_activations
from .gradients.layer import layer_gradient_x_activation as layer_gradient_x_activation
from .gradients.layer import layer_integrated_gradients as layer_integrated_gradients
from .gradients.layer import layer_conductance as layer_conductance
from .gradients.layer import internal_influence as internal_influence
from .gradients.layer import neuron_conductance as neuron_conductance
from .gradients.layer import neurons as neurons
from .gradients.modelviz import FeatureVisualization as FeatureVisualization
from .gradients.modelviz import feature_maps as feature_maps
from .gradients.modelviz import feature_visualization as feature_visualization
from .gradients.modelviz import filters as filters
from .gradients.modelviz import tile as tile
from .gradients.modelviz import tile_maps as tile_maps

# --- perturbation, lime, shapley ---------------------------------------------------------
from ._core.features import gaussian_blur as gaussian_blur
from ._core.features import resolve_baseline as resolve_baseline
from ._core.features import superpixels as superpixels
from ._core.features import to_pixels as to_pixels
from .perturbation.engine import feature_ablation as feature_ablation
from .perturbation.engine import occlusion as occlusion
from .perturbation.engine import rise as rise
from .perturbation.lime import lime as lime
from .perturbation.kernelshap import kernel_shap as kernel_shap
from .perturbation.shapley import exact_shapley as exact_shapley
from .perturbation.shapley import shapley_sampling as shapley_sampling

# --- metrics --------------------------------------------------------------------------------
from .metrics import Curve as Curve
from .metrics import MetricTable as MetricTable
from .metrics import RandomisationResult as RandomisationResult
from .metrics import avg_sensitivity as avg_sensitivity
from .metrics import complexity as complexity
from .metrics import completeness_gap as completeness_gap
from .metrics import deletion as deletion
from .metrics import efficiency_gap as efficiency_gap
from .metrics import evaluate as evaluate
from .metrics import faithfulness_correlation as faithfulness_correlation
from .metrics import infidelity as infidelity
from .metrics import insertion as insertion
from .metrics import local_lipschitz_estimate as local_lipschitz_estimate
from .metrics import max_sensitivity as max_sensitivity
from .metrics import model_parameter_randomisation as model_parameter_randomisation
from .metrics import monotonicity as monotonicity
from .metrics import pointing_game as pointing_game
from .metrics import random_logit as random_logit
from .metrics import relevance_mass as relevance_mass
from .metrics import relevance_rank_accuracy as relevance_rank_accuracy
from .metrics import road as road
from .metrics import sparseness as sparseness
from .metrics import ssim as ssim

# --- visualize / global / cli -------------------------------------------------------------
from . import visualize as visualize
from .perturbation.global_ import GlobalImportance as GlobalImportance
from .perturbation.global_ import Surrogate as Surrogate
from .perturbation.global_ import global_importance as global_importance
from .perturbation.global_ import global_surrogate as global_surrogate

# --- pipeline --------------------------------------------------------------------------------
from .pipeline.dataset import RunSummary as RunSummary
from .pipeline.dataset import enable_compilation_cache as enable_compilation_cache
from .pipeline.dataset import explain_dataset as explain_dataset
from .pipeline.dataset import load_results as load_results

__version__ = "0.1.0"

__all__ = [
    "config",
    "gaussian_blur",
    "resolve_baseline",
    "superpixels",
    "to_pixels",
    "feature_ablation",
    "occlusion",
    "rise",
    "lime",
    "kernel_shap",
    "exact_shapley",
    "shapley_sampling",
    "GlobalImportance",
    "Surrogate",
    "global_importance",
    "global_surrogate",
    "visualize",
    "Curve",
    "MetricTable",
    "RandomisationResult",
    "avg_sensitivity",
    "complexity",
    "completeness_gap",
    "deletion",
    "efficiency_gap",
    "evaluate",
    "faithfulness_correlation",
    "infidelity",
    "insertion",
    "local_lipschitz_estimate",
    "max_sensitivity",
    "model_parameter_randomisation",
    "monotonicity",
    "pointing_game",
    "random_logit",
    "relevance_mass",
    "relevance_rank_accuracy",
    "road",
    "sparseness",
    "ssim",
    "grad_cam",
    "grad_cam_plus_plus",
    "guided_grad_cam",
    "layer_activations",
    "layer_gradient_x_activation",
    "layer_integrated_gradients",
    "layer_conductance",
    "internal_influence",
    "neuron_conductance",
    "neurons",
    "FeatureVisualization",
    "feature_maps",
    "feature_visualization",
    "filters",
    "tile",
    "tile_maps",
    "RunSummary",
    "enable_compilation_cache",
    "explain_dataset",
    "load_results",
    "deconvnet",
    "deeplift",
    "deeplift_shap",
    "lrp",
    "relevance",
    "expected_gradients",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "noise_tunnel",
    "saliency",
    "testing",
    "smoothgrad",
    "squaregrad",
    "vargrad",
    "with_relu_rule",
    "Explanation",
    "Model",
    "Target",
    "apply_coalitions",
    "as_model",
    "as_target",
    "from_callable",
    "from_linen",
    "from_nnx",
    "grid_segments",
    "pixel_segments",
    "to_numpy",
]
