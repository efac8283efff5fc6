"""Attributions differentiated with respect to the model's parameters (double backprop).

For each gradient-family method, `jax.grad` of `L(params) = sum(W * values**2)`
(`W` a fixed random weighting) under `jax.jit`, with the weights as traced inputs
of a Linen or NNX model, matches central finite differences along a few random
unit directions `v` of the parameters: `(L(p + h v) - L(p - h v)) / 2h`.

Step and tolerance (float32): the central difference errs by `h^2/6 |L'''|`
(truncation) plus about `eps |L| / h` (round-off, eps = 6e-8). With `h = 1e-2`
and `|L| ~ 1` both stay below 1e-5 on these smooth tanh/softplus models (the
measured gap between `h = 1e-2` and `h = 1e-3` was < 3e-5 for every method). We
ask `|grad . v - FD| <= 2e-3 ||grad||`: `||grad||` bounds any unit directional
derivative, so the check is scale-free, and a random direction's derivative is
about `||grad|| / sqrt(#params)` (~ 0.07 ||grad|| here), so 2e-3 is ~3% of a
typical value: a gradient that dropped the second-order path (the attribution's
dependence on the weights through its backward pass) fails it by far (checked in
`test_a_first_order_only_gradient_fails_the_check`).

Findings, stated in docs/guides/training.md:
- every method below is reverse-differentiable twice, with the CPU rewrites off and on;
- forward-over-reverse (`jax.jvp`, `jax.hessian`, `jax.jacfwd` of a method w.r.t. the
  weights) works with the rewrites off; with them on, methods that interpret the
  model's jaxpr (DeepLIFT, LRP, Grad-CAM) raise JAX's TypeError for a custom VJP;
- on piecewise-linear (ReLU) models the derivatives exist almost everywhere and are
  nonzero with respect to the weights, while the input Hessian of a ReLU model is 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jx

H = 1e-2
STEP = {"lrp": 1e-3}  # see test_lrp_epsilon_values_jump_where_a_pre_activation_crosses_zero
TOL = 2e-3
N_DIRS = 3


class SmoothNet(nn.Module):
    """6x6x1 -> conv 2 channels (tanh) -> softplus -> dense 3."""

    act: str = "tanh"

    @nn.compact
    def __call__(self, x):
        a = nn.Conv(2, (3, 3), name="conv")(x)
        a = jnp.tanh(a) if self.act == "tanh" else jax.nn.relu(a)
        a = a.reshape(a.shape[0], -1)
        a = jax.nn.softplus(a) if self.act == "tanh" else a
        return nn.Dense(3, name="head")(a)


class SmoothNNX(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
        self.head = nnx.Linear(72, 3, rngs=rngs)

    def __call__(self, x):
        a = jnp.tanh(self.conv(x))
        return self.head(jax.nn.softplus(a.reshape(a.shape[0], -1)))


X = jax.random.normal(jax.random.key(1), (2, 6, 6, 1))
REFS = jax.random.normal(jax.random.key(2), (3, 6, 6, 1))
KEY = jax.random.key(3)

METHODS = {
    "saliency": lambda m: jx.saliency(m, X, target=0),
    "gradient_x_input": lambda m: jx.gradient_x_input(m, X, target=0),
    "integrated_gradients": lambda m: jx.integrated_gradients(m, X, target=0, steps=4),
    "smoothgrad": lambda m: jx.smoothgrad(m, X, target=0, key=KEY, n_samples=4),
    "expected_gradients": lambda m: jx.expected_gradients(m, X, target=0, references=REFS,
                                                         key=KEY, n_samples=4),
    "grad_cam": lambda m: jx.grad_cam(m, X, target=0, layer="conv", relu=False),
    "deeplift": lambda m: jx.deeplift(m, X, target=0, baseline=0.1),
    # Epsilon(0.1): the default 1e-6 divides by pre-activations near 0, which makes
    # L steep (FD converges only as h -> 1e-3); the derivative is right either way
    "lrp": lambda m: jx.lrp(m, X, target=0, rule=jx.relevance.Epsilon(0.1)),
    "guided_backprop": lambda m: jx.guided_backprop(m, X, target=0),
}
CHEAP = ("saliency",)  # Grad-CAM's cheap case is the NNX one


def linen_model(act="tanh"):
    net = SmoothNet(act)
    return jx.from_linen(net, net.init(jax.random.key(0), X))


def nnx_model():
    return jx.from_nnx(SmoothNNX(nnx.Rngs(0)))


def unit_directions(params, k=N_DIRS, seed=10):
    leaves, tree = jax.tree.flatten(params)
    dirs = []
    for d in range(k):
        keys = jax.random.split(jax.random.key(seed + d), len(leaves))
        v = [jax.random.normal(kk, l.shape, l.dtype) for kk, l in zip(keys, leaves)]
        norm = jnp.sqrt(sum(jnp.sum(a * a) for a in v))
        dirs.append([a / norm for a in v])
    return jax.tree.unflatten(tree, [jnp.stack(ls) for ls in zip(*dirs)])


def vdot(a, b):
    return sum(jnp.vdot(u, w) for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def grad_and_fd(method, model, weighting, h=H):
    """One jitted program: the gradient of L, its derivative along each direction and
    the central differences there (the perturbed losses run in a `lax.map`)."""
    def loss(p):
        return jnp.sum(weighting * method(model.replace(p)).values ** 2)

    @jax.jit
    def run(p, dirs):
        g = jax.grad(loss)(p)
        along = jax.vmap(lambda v: vdot(g, v))(dirs)

        def central(v):
            plus = jax.tree.map(lambda a, b: a + h * b, p, v)
            minus = jax.tree.map(lambda a, b: a - h * b, p, v)
            return (loss(plus) - loss(minus)) / (2 * h)

        return g, along, jax.lax.map(central, dirs)

    return run(model.params, unit_directions(model.params))


def check_against_fd(name, model):
    method = METHODS[name]
    shape = method(model).values.shape
    weighting = jax.random.normal(jax.random.key(5), shape)
    g, along, fd = grad_and_fd(method, model, weighting, STEP.get(name, H))
    norm = float(jnp.sqrt(vdot(g, g)))
    assert norm > 0 and np.isfinite(norm)
    np.testing.assert_allclose(np.asarray(along), np.asarray(fd), rtol=0, atol=TOL * norm)
    return g, along


def _cases():
    for name in METHODS:
        for rewrites in ("0", "1"):
            slow = name not in CHEAP or rewrites == "1"
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(name, rewrites, id=f"{name}-rewrites{rewrites}", marks=marks)


@pytest.mark.parametrize("name, rewrites", list(_cases()))
def test_grad_wrt_linen_params_matches_finite_differences(name, rewrites):
    with jx.config.override(cpu_rewrites=rewrites):
        check_against_fd(name, linen_model())


@pytest.mark.parametrize("name", [
    pytest.param("saliency", marks=pytest.mark.slow), pytest.param("integrated_gradients", marks=pytest.mark.slow),
    pytest.param("smoothgrad", marks=pytest.mark.slow),
    pytest.param("expected_gradients", marks=pytest.mark.slow), "grad_cam",
    pytest.param("deeplift", marks=pytest.mark.slow), pytest.param("lrp", marks=pytest.mark.slow),
])
def test_grad_wrt_nnx_params_matches_finite_differences(name):
    check_against_fd(name, nnx_model())


@pytest.mark.slow
def test_nnx_and_linen_twins_give_the_same_double_backprop_gradient():
    """The NNX adapter traces the same weights: loaded with the Linen weights, the
    gradient of a saliency loss w.r.t. the kernel is the Linen one."""
    lin = linen_model()
    net = SmoothNNX(nnx.Rngs(0))
    p = lin.params["params"]
    net.conv.kernel[...] = p["conv"]["kernel"]
    net.conv.bias[...] = p["conv"]["bias"]
    net.head.kernel[...] = p["head"]["kernel"]
    net.head.bias[...] = p["head"]["bias"]
    nx = jx.from_nnx(net)
    w = jax.random.normal(jax.random.key(5), X.shape)

    def grads(model):
        loss = lambda m: jnp.sum(w * jx.saliency(m, X, target=0).values ** 2)
        return jax.jit(jax.grad(loss))(model)

    gl, gn = grads(lin), grads(nx)
    kn = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(gn.params)
          if "head" in jax.tree_util.keystr(path) and "kernel" in jax.tree_util.keystr(path)]
    np.testing.assert_allclose(np.asarray(kn[0]), np.asarray(gl.params["params"]["head"]["kernel"]),
                               rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(kn[0]).max()) > 1e-4


@pytest.mark.slow
def test_a_first_order_only_gradient_fails_the_check():
    """The check has teeth: differentiating only the explicit dependence (the saliency
    map's backward pass held fixed) misses the FD derivative by far more than TOL."""
    model = linen_model()
    w = jax.random.normal(jax.random.key(5), X.shape)

    def loss(p):
        vals = jx.saliency(model.replace(p), X, target=0).values
        return jnp.sum(w * vals ** 2)

    def loss_half(p):  # the values' weights held fixed in one of the two factors
        vals = jx.saliency(model.replace(p), X, target=0).values
        return jnp.sum(w * jax.lax.stop_gradient(vals) * vals)

    dirs = unit_directions(model.params)
    g = jax.jit(jax.grad(loss_half))(model.params)
    gfull = jax.jit(jax.grad(loss))(model.params)
    along = jax.vmap(lambda v: vdot(g, v))(dirs)
    full = jax.vmap(lambda v: vdot(gfull, v))(dirs)
    # loss_half's gradient is half of the true one: the check would reject it
    assert float(jnp.max(jnp.abs(along - full))) > 10 * TOL * float(jnp.sqrt(vdot(gfull, gfull)))


@pytest.mark.slow
def test_relu_models_second_order_in_the_input_is_zero_but_not_in_the_weights():
    """Piecewise-linear models: the saliency map is locally constant in x (its input
    Hessian is 0, so input-gradient penalties cannot be trained through x), yet it
    is linear in each layer's weights, so double backprop w.r.t. the weights is
    nonzero and matches finite differences (no kink is crossed within h here)."""
    model = linen_model("relu")
    w = jax.random.normal(jax.random.key(5), X.shape)
    hess_x = jax.jit(jax.grad(lambda z: jnp.sum(w * jx.saliency(model, z, target=0).values)))(X)
    assert float(jnp.abs(hess_x).max()) == 0.0
    g, _ = check_against_fd("saliency", model)
    assert float(jnp.sqrt(vdot(g, g))) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["guided_backprop", "deeplift", "lrp"])
def test_relu_rule_methods_differentiate_through_their_custom_rules(name):
    """Guided backprop's ReLU rule, DeepLIFT's rescale rule and LRP's epsilon rule are
    custom VJPs whose backward passes are plain JAX: reverse-over-reverse works."""
    check_against_fd(name, linen_model("relu"))


@pytest.mark.parametrize("rewrites, raises", [
    pytest.param("0", False, marks=pytest.mark.slow), ("1", True)])
def test_forward_over_reverse_needs_the_cpu_rewrites_off(rewrites, raises):
    """`jax.jvp` through DeepLIFT w.r.t. the weights: the CPU rewrites replace a
    few-channel convolution's backward pass with a custom VJP (fast on XLA:CPU),
    which forward mode cannot enter; with them off the JVP is the reverse-mode
    directional derivative."""
    model = linen_model()
    w = jax.random.normal(jax.random.key(5), X.shape)
    loss = lambda p: jnp.sum(w * jx.deeplift(model.replace(p), X, target=0, baseline=0.1).values ** 2)
    dirs = unit_directions(model.params, k=1)
    v = jax.tree.map(lambda a: a[0], dirs)
    with jx.config.override(cpu_rewrites=rewrites):
        if raises:
            with pytest.raises(TypeError, match="custom_vjp"):
                jax.jit(lambda p, t: jax.jvp(loss, (p,), (t,)))(model.params, v)
            return
        _, tangent = jax.jit(lambda p, t: jax.jvp(loss, (p,), (t,)))(model.params, v)
        g = jax.jit(jax.grad(loss))(model.params)
    np.testing.assert_allclose(float(tangent), float(vdot(g, v)), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_lrp_epsilon_values_jump_where_a_pre_activation_crosses_zero():
    """LRP-epsilon divides by `z + eps sign(z)`: where a pre-activation `z` crosses 0
    along a change of the weights, the stabiliser jumps by `2 eps` and so do the
    relevances. Between such points `jax.grad` is exact (the FD check above, with a
    step smaller than the distance to the jump); across one, no derivative exists.
    Here (NNX model, third direction) the jump lies between t = -8e-3 and -6e-3,
    which is why LRP's FD step is 1e-3."""
    model = nnx_model()
    method = METHODS["lrp"]
    w = jax.random.normal(jax.random.key(5), method(model).values.shape)
    v = jax.tree.map(lambda a: a[2], unit_directions(model.params))
    loss = lambda p: jnp.sum(w * method(model.replace(p)).values ** 2)
    ts = jnp.array([-8e-3, -6e-3, -4e-3])
    ls = jax.jit(jax.vmap(lambda t: loss(jax.tree.map(lambda a, b: a + t * b, model.params, v))))(ts)
    jump, smooth = abs(float(ls[1] - ls[0])), abs(float(ls[2] - ls[1]))
    assert jump > 50 * smooth and jump > 0.1


def test_a_method_first_called_inside_the_callers_jit_checks_its_concrete_input():
    """`x` closed over by a jitted loss, never seen eagerly: the finiteness check on it
    runs at trace time instead of reading a tracer (it raised TracerArrayConversionError)."""
    m = jx.testing.linear_model(jnp.array([[1.0], [-2.0]]))
    x = jax.random.normal(jax.random.key(7), (2, 2))
    loss = lambda p: jnp.sum(jx.saliency(m.replace(p), x, target=0).values ** 2)
    g = jax.jit(jax.grad(loss))(m.params)
    np.testing.assert_allclose(np.asarray(g[0])[:, 0], [4.0, -8.0])  # 2 examples * 2 w
    bad = jnp.array([[jnp.nan, 1.0]])
    with pytest.raises(ValueError, match="^x: expected finite"):
        jax.jit(lambda p: jnp.sum(jx.saliency(m.replace(p), bad, target=0).values))(m.params)
