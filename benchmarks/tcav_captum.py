"""Captum's `TCAV` on a PyTorch twin, for `benchmarks.tcav_reference`.

`captum_tcav` runs `captum.concept.TCAV` for several concepts against the same random
sets (drawn as jaxplain's `test="student"` draws them), with Captum's default
classifier (its reported accuracy corrected: captum issue #1122) or with one fitting
jaxplain's CAV objective. torch and captum are imported inside the functions: the
module imports without them.
"""

from __future__ import annotations

import numpy as np


def captum_available() -> str | None:
    """Captum's version when torch and captum import, else `None`."""
    try:
        import captum
        import torch  # noqa: F401
    except ImportError:
        return None
    return captum.__version__


def _jaxplain_objective(reg: float = 0.01):
    """A Captum `Classifier` fitting jaxplain's CAV objective with scikit-learn (mean
    log-loss + reg * s / 2 * |w|^2, s the mean squared spread of the activations) on
    Captum's shuffled 67/33 split."""
    import torch
    from captum.concept import Classifier
    from sklearn.linear_model import LogisticRegression

    class JaxplainObjective(Classifier):
        def __init__(self):
            self.lm = None

        def train_and_eval(self, dataloader, test_split_ratio: float = 0.33, **kwargs):
            xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in dataloader])
            X, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys)
            order = np.random.permutation(len(X))
            n_test = int(test_split_ratio * len(X))
            te, tr = order[:n_test], order[n_test:]
            spread = np.mean(np.sum((X[tr] - X[tr].mean(0)) ** 2, 1))
            self.lm = LogisticRegression(C=1.0 / (reg * len(tr) * spread), max_iter=5000)
            self.lm.fit(X[tr], y[tr])
            return {"accs": torch.tensor(self.lm.score(X[te], y[te]))}

        def weights(self):
            w = torch.tensor(self.lm.coef_[0], dtype=torch.float32)
            return torch.stack([-w, w])

        def classes(self):
            return list(self.lm.classes_)

    return JaxplainObjective()


def _default_classifier():
    """Captum's `DefaultClassifier` (the same SGD fit on the same kind of split) whose
    reported accuracy is correct: Captum's own takes the argmax of the binary
    classifier's one-column scores, so it always predicts the first class and reports
    that class's share of the test split (captum issue #1122, open in 0.9.0)."""
    import torch
    from captum.concept import DefaultClassifier
    from captum.concept._utils.classifier import _train_test_split
    from torch.utils.data import DataLoader, TensorDataset

    class Default(DefaultClassifier):
        def train_and_eval(self, dataloader, test_split_ratio: float = 0.33, **kwargs):
            xs, ys = zip(*dataloader)
            x_train, x_test, y_train, y_test = _train_test_split(
                torch.cat(xs), torch.cat(ys), test_split=test_split_ratio)
            self.lm.device = "cpu"
            self.lm.fit(DataLoader(TensorDataset(x_train, y_train)))
            margin = self.lm(x_test)[:, 0]  # towards classes()[1]
            predict = self.lm.classes()[(margin > 0).long()]
            return {"accs": (predict.long() == y_test.long()).float().mean()}

    return Default()


def random_sets(n_pool: int, m: int, n_random: int, rng) -> list[np.ndarray]:
    """Indices of `n_random + 1` random sets of `m` pool examples: set 0 first, the
    others drawn from the rest of the pool (the scheme of jaxplain's `test="student"`)."""
    order = rng.permutation(n_pool)
    first, rest = order[:m], order[m:]
    return [first] + [rest[rng.permutation(len(rest))[:m]] for _ in range(n_random)]


def captum_tcav(torch_model, layer: str, x, concepts_x: dict, pool, target: int,
                n_random: int, seed: int, classifier: str = "default") -> dict:
    """Captum's `TCAV` for every concept against the same random sets:
    `{name: (concept scores, random scores, p-value, mean concept CAV accuracy)}`.

    Args:
      torch_model: the PyTorch twin (NCHW in).
      layer: the name of its submodule where concepts are read.
      x, concepts_x, pool: NHWC images (the inputs, `{name: concept examples}`, and
        the pool the random sets are drawn from).
      classifier: `"default"` (Captum's `DefaultClassifier`, its accuracy corrected:
        `_default_classifier`) or `"jaxplain"` (`_jaxplain_objective`).
    """
    import random
    import tempfile
    import warnings

    import torch
    from captum.concept import TCAV, Concept
    from captum.concept._utils.common import concepts_to_str
    from scipy import stats
    from torch.utils.data import DataLoader

    from . import twins

    random.seed(seed)  # Captum's train/test split
    np.random.seed(seed)  # scikit-learn's SGD shuffling (no random_state in Captum's classifier)
    torch.manual_seed(seed)
    m = len(next(iter(concepts_x.values())))
    idx = random_sets(len(pool), m, n_random, np.random.default_rng(seed))

    def concept(i, name, images):
        loader = DataLoader(twins.to_nchw(images, "cpu"), batch_size=64)
        return Concept(i, name, loader)

    named = {name: concept(i, name.replace(" ", "_"), cx)
             for i, (name, cx) in enumerate(concepts_x.items())}
    rand = [concept(1000 + i, f"random{i}", pool[j]) for i, j in enumerate(idx)]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DefaultClassifier warns that it holds the sets in memory
        clf = _jaxplain_objective() if classifier == "jaxplain" else _default_classifier()
        tcav = TCAV(torch_model, [layer], classifier=clf, save_path=tmp)
        experiments = [[c, r] for c in named.values() for r in rand[1:]]
        experiments += [[rand[0], r] for r in rand[1:]]
        out = tcav.interpret(twins.to_nchw(x, "cpu"), experiments, target=target)

        def score(c, r):
            return float(out[concepts_to_str([c, r])][layer]["sign_count"][0])

        randoms = np.array([score(rand[0], r) for r in rand[1:]])
        res = {}
        for name, c in named.items():
            scores = np.array([score(c, r) for r in rand[1:]])
            accs = [float(tcav.cavs[concepts_to_str([c, r])][layer].stats["accs"])
                    for r in rand[1:]]
            res[name] = (scores, randoms, float(stats.ttest_ind(scores, randoms).pvalue),
                         float(np.mean(accs)))
    return res
