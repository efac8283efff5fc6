"""Pictures of explanations: the NumPy adapter plus matplotlib plots.

The only part of jaxplain that imports matplotlib (lazily, inside the plot
functions, so `import jaxplain` stays light); the NumPy arithmetic lives in
`jaxplain.visualize.heatmaps`. Every `plot_*` function returns the
`matplotlib.figure.Figure` and never calls `show()`: save it with
`fig.savefig(path)` or display it in a notebook.

Heatmaps follow the conventions of Captum's `visualize_image_attr` and shap's image
plots: attributions are reduced over channels, clipped at a high percentile of
their magnitude (so one hot pixel does not wash out the rest), shown with a
diverging map centred on zero when they are signed (red = evidence for the target,
blue = against) or a sequential map when they are magnitudes, and blended over a
grayscale copy of the image with an opacity that follows the attribution, so the
image stays readable where the explanation is silent.
"""

from __future__ import annotations

from .heatmaps import ABSOLUTE_CMAP as ABSOLUTE_CMAP
from .heatmaps import REDUCTIONS as REDUCTIONS
from .heatmaps import SIGNED_CMAP as SIGNED_CMAP
from .heatmaps import SIGNS as SIGNS
from .heatmaps import as_array as as_array
from .heatmaps import feature_map as feature_map
from .heatmaps import is_signed as is_signed
from .heatmaps import normalize as normalize
from .heatmaps import reduce_channels as reduce_channels
from .heatmaps import resolve_sign as resolve_sign
from .heatmaps import scale_of as scale_of
from .heatmaps import to_gray as to_gray
from .heatmaps import to_image as to_image
from .heatmaps import to_numpy as to_numpy
from .heatmaps import upsample as upsample
from ._attributions import auc as auc
from ._attributions import overlay as overlay
from ._attributions import plot_attributions as plot_attributions
from ._attributions import plot_curves as plot_curves
from ._attributions import plot_segments as plot_segments
from ._benchmark import plot_benchmark as plot_benchmark
from ._common import blend as blend
from ._concepts import plot_tcav as plot_tcav
from ._common import save as save
from ._model import plot_feature_maps as plot_feature_maps
from ._model import plot_feature_visualization as plot_feature_visualization
from ._model import plot_filters as plot_filters
from ._model import plot_importance as plot_importance
from ._outputs import anchor_image as anchor_image
from ._outputs import plot_anchor as plot_anchor
from ._outputs import plot_counterfactual as plot_counterfactual
from ._outputs import plot_decision_plane as plot_decision_plane
from ._outputs import plot_ensemble as plot_ensemble
from ._outputs_demo import output_views as output_views

from .._core.types import PLOTTERS as _PLOTTERS

_PLOTTERS["attributions"] = plot_attributions  # Explanation.plot
