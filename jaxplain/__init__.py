"""jaxplain: a JAX-native attribution engine for Flax models and any JAX function.

Every method is a pure function `method(model, x, *, target, ...) -> Explanation`.
Import the flat namespace: `import jaxplain as jx; jx.integrated_gradients(...)`.

The methods (and metrics) are exported from the registry their modules fill
(`jaxplain._core.registry`): importing the family subpackages below registers
them. Everything else public is listed here, one name per line.
"""

# --- the method families: importing them registers their methods --------------------------
from . import attention as attention
from . import gradients as gradients
from . import metrics as metrics
from . import outputs as outputs
from . import concepts as concepts
from . import perturbation as perturbation
from . import training as training

# --- settings, types and adapters -----------------------------------------------------------
from ._compile import config as config
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
from ._core.cost import Plan as Plan
from ._core.cost import plan as plan

# --- features -------------------------------------------------------------------------------
from ._core.features import apply_coalitions as apply_coalitions
from ._core.features import gaussian_blur as gaussian_blur
from ._core.features import grid_segments as grid_segments
from ._core.features import pixel_segments as pixel_segments
from ._core.features import resolve_baseline as resolve_baseline
from ._core.features import superpixels as superpixels
from ._core.features import to_pixels as to_pixels

# --- adapters and helpers of the gradient family ----------------------------------------------
from .gradients import relevance as relevance
from .gradients.basic import with_relu_rule as with_relu_rule
from .gradients.layer import neurons as neurons
from .gradients.modelviz import FeatureVisualization as FeatureVisualization
from .gradients.modelviz import feature_maps as feature_maps
from .gradients.modelviz import feature_visualization as feature_visualization
from .gradients.modelviz import filters as filters
from .gradients.modelviz import tile as tile
from .gradients.modelviz import tile_maps as tile_maps

# --- attention: layers, weights, patches as features ------------------------------------------
from .attention import attention_layers as attention_layers
from .attention import capture_attention as capture_attention
from .attention import patch_segments as patch_segments

# --- global views ---------------------------------------------------------------------------
from .perturbation.global_ import GlobalImportance as GlobalImportance
from .perturbation.global_ import Surrogate as Surrogate
from .perturbation.global_ import global_importance as global_importance
from .perturbation.global_ import global_surrogate as global_surrogate

# --- output explanations: result types and explanations over weights ------------------------
from .outputs import Anchor as Anchor
from .outputs import Counterfactual as Counterfactual
from .outputs import OverWeights as OverWeights
from .outputs import Plane as Plane
from .outputs import over_weights as over_weights

# --- concepts: CAVs and the TCAV result ------------------------------------------------------
from .concepts import CAV as CAV
from .concepts import TCAVResult as TCAVResult
from .concepts import concept_activation_vector as concept_activation_vector

# --- learning with explanations: amortised Shapley explainers --------------------------------
from .training import AmortisedExplainer as AmortisedExplainer
from .training import AmortisedFit as AmortisedFit
from .training import fit_amortised as fit_amortised

# --- metrics' result types and the methods x metrics table ---------------------------------------
from .metrics import Curve as Curve
from .metrics import MetricTable as MetricTable
from .metrics import RandomisationResult as RandomisationResult
from .metrics import evaluate as evaluate

# --- plots and pipelines --------------------------------------------------------------------------
from . import visualize as visualize
from .pipeline.dataset import RunSummary as RunSummary
from .pipeline.dataset import enable_compilation_cache as enable_compilation_cache
from .pipeline.dataset import explain_dataset as explain_dataset
from .pipeline.dataset import explain_to_shards as explain_to_shards
from .pipeline.dataset import load_results as load_results

# --- every registered method and metric -------------------------------------------------------------
from ._core.registry import REGISTRY as _REGISTRY

globals().update({_name: _entry.fn for _name, _entry in _REGISTRY.items()})

__version__ = "0.1.0"

_LISTED = [
    "config", "Explanation", "to_numpy", "Model", "as_model", "from_callable", "from_linen",
    "from_nnx", "Target", "as_target", "testing", "Plan", "plan",
    "apply_coalitions", "gaussian_blur", "grid_segments", "pixel_segments", "resolve_baseline",
    "superpixels", "to_pixels",
    "relevance", "with_relu_rule", "neurons", "FeatureVisualization", "feature_maps",
    "feature_visualization", "filters", "tile", "tile_maps",
    "attention_layers", "capture_attention", "patch_segments",
    "GlobalImportance", "Surrogate", "global_importance", "global_surrogate",
    "Anchor", "Counterfactual", "OverWeights", "Plane", "over_weights",
    "CAV", "TCAVResult", "concept_activation_vector", "training",
    "AmortisedExplainer", "AmortisedFit", "fit_amortised",
    "Curve", "MetricTable", "RandomisationResult", "evaluate",
    "visualize", "RunSummary", "enable_compilation_cache", "explain_dataset", "explain_to_shards",
    "load_results",
]
__all__ = _LISTED + sorted(_REGISTRY)
