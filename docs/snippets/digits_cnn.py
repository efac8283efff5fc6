import jax
import jax.numpy as jnp
import numpy as np
import optax
import flax.linen as nn
from sklearn.datasets import load_digits

import jaxplain as jx

digits = load_digits()  # 1797 grey 8x8 digits, shipped with scikit-learn
images = (digits.images[..., None] / 16.0).astype(np.float32)  # (N, 8, 8, 1) in [0, 1]
labels = digits.target


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(32, (3, 3), name="conv2")(x))
        x = x.mean(axis=(1, 2))  # global average pooling
        return nn.Dense(10, name="head")(x)


net = CNN()
params = net.init(jax.random.key(0), images[:1])
opt = optax.adam(1e-2)
opt_state = opt.init(params)


@jax.jit
def train_step(params, opt_state, xb, yb):
    def loss(p):
        logits = net.apply(p, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    grads = jax.grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state


train, test = slice(0, 1500), slice(1500, None)
rng = np.random.default_rng(0)
for _ in range(500):  # about 3 s on two CPU cores
    idx = rng.integers(0, 1500, 32)
    params, opt_state = train_step(params, opt_state, images[idx], labels[idx])

accuracy = (net.apply(params, images[test]).argmax(-1) == labels[test]).mean()
print(f"test accuracy {accuracy:.1%}")
