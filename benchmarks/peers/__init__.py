"""Peer implementations (Captum, shap, lime, Quantus): zero-argument callables on the twin.

Every builder returns `fn()` that computes the attribution for the benchmark
inputs, with all set-up (explainer objects, tensors, masks) done outside the
timed call, on the device torch sees (`device()`: CUDA when available). Imports
are local: a missing peer only disables its own builders (see `available`).
`games` holds the sample-efficiency benchmark's peers, which run on JAX games
rather than on the twin (imported by `sample_efficiency` itself).
"""

from .common import available as available
from .common import device as device
from .common import feature_mask as feature_mask
from .common import targets as targets
from .common import to_features as to_features
from .common import to_numpy as to_numpy
from .gradients import captum_deeplift as captum_deeplift
from .gradients import captum_deeplift_shap as captum_deeplift_shap
from .gradients import captum_gradient_shap as captum_gradient_shap
from .gradients import captum_guided_backprop as captum_guided_backprop
from .gradients import captum_guided_gradcam as captum_guided_gradcam
from .gradients import captum_ig as captum_ig
from .gradients import captum_layer_deeplift as captum_layer_deeplift
from .gradients import captum_layer_gradcam as captum_layer_gradcam
from .gradients import captum_lrp as captum_lrp
from .gradients import captum_neuron_conductance as captum_neuron_conductance
from .gradients import captum_path as captum_path
from .gradients import captum_saliency as captum_saliency
from .gradients import captum_smoothgrad as captum_smoothgrad
from .gradients import shap_deep as shap_deep
from .gradients import shap_gradient as shap_gradient
from .metrics import distinct_ranks as distinct_ranks
from .metrics import quantus_pixel_flipping as quantus_pixel_flipping
from .perturbation import captum_feature_ablation as captum_feature_ablation
from .perturbation import captum_kernel_shap as captum_kernel_shap
from .perturbation import captum_lime as captum_lime
from .perturbation import captum_occlusion as captum_occlusion
from .perturbation import captum_shapley_sampling as captum_shapley_sampling
from .perturbation import coalition_fn as coalition_fn
from .perturbation import lime_image as lime_image
from .perturbation import shap_kernel as shap_kernel
