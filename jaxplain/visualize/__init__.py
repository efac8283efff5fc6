"""Pictures of explanations: the NumPy adapter plus matplotlib plots.

The only part of jaxplain that imports matplotlib (lazily, inside the plot
functions, so `import jaxplain` stays light); the NumPy arithmetic lives in
`jaxplain._heatmaps`. Every `plot_*` function returns the
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

from .._heatmaps import ABSOLUTE_CMAP as ABSOLUTE_CMAP
from .._heatmaps import REDUCTIONS as REDUCTIONS
from .._heatmaps import SIGNED_CMAP as SIGNED_CMAP
from .._heatmaps import SIGNS as SIGNS
from .._heatmaps import as_array as as_array
from .._heatmaps import feature_map as feature_map
from .._heatmaps import is_signed as is_signed
from .._heatmaps import normalize as normalize
from .._heatmaps import reduce_channels as reduce_channels
from .._heatmaps import resolve_sign as resolve_sign
from .._heatmaps import scale_of as scale_of
from .._heatmaps import to_gray as to_gray
from .._heatmaps import to_image as to_image
from .._heatmaps import to_numpy as to_numpy
from .._heatmaps import upsample as upsample
from ._attributions import auc as auc
from ._attributions import overlay as overlay
from ._attributions import plot_attributions as plot_attributions
from ._attributions import plot_curves as plot_curves
from ._attributions import plot_segments as plot_segments
from ._benchmark import plot_benchmark as plot_benchmark
from ._common import blend as blend
from ._common import save as save
from ._model import plot_feature_maps as plot_feature_maps
from ._model import plot_feature_visualization as plot_feature_visualization
from ._model import plot_filters as plot_filters
from ._model import plot_importance as plot_importance
