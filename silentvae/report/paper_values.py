"""The paper's published numbers (arXiv 2508.03587), keyed by this package's method and dataset ids.

Every value was copied from the paper text; ``tests/test_report.py`` checks every one of them (no skip) against
``tests/paper_tables.txt``, the paper's table lines and the two sentences with the convergence and Taylor numbers,
kept verbatim in the repository:

* ``TABLE1``: gradient-variance decomposition (Sec. 3, fixed variance, MNIST), epochs 1 / 50 / 250.
* ``TABLE2``: fixed variance, MNIST, final (epoch 500) validation BPD and MSE.
* ``CONVERGENCE``: Sec. 3.2 text: epochs needed to reach 6.73 validation BPD.
* ``TABLE3`` / ``TABLE4`` / ``TABLE9``: learnable variance, BPD mean +- std over 3 seeds / KLD / MSE of a
  single run, for MNIST, ImageNet 32x32 and CIFAR-10. The paper's "Continuous None" / "Discrete None" rows
  (Table 9: "Silent Gradients (SG)") are the standalone "None + SG" methods ``none_sg_gaussian`` /
  ``none_sg_bernoulli`` and appear only in the "With SG" column. Method labels: :mod:`silentvae.training.methods`.
* ``TAYLOR_BIAS``: Sec. 4.1, L2 deviation from the exact (enumerated) encoder gradient, learnable variance
  (REINFORCE: 100,000 samples, baseline not specified; Gumbel-Softmax given as "6.1k").

MSE is the per-image sum of squared errors (as ``val_mse`` of :mod:`silentvae.training.run`).
Our ``mnist5k`` (the 5,000-image MNIST subset) and ``mnist`` results are compared with the paper's MNIST
numbers; ``fashion_mnist`` has no paper counterpart.
"""

from __future__ import annotations

__all__ = ["TABLE1", "TABLE1_EPOCHS", "TABLE2", "TABLE3", "TABLE4", "TABLE9", "TAYLOR_BIAS", "TAYLOR_LABELS", "TAYLOR_SHORT", "TAYLOR_PAPER_KEY",
           "CONVERGENCE", "DATASET_LABELS", "PAPER_DATASET", "PAPER_DATASETS", "LEARNABLE_ROWS", "paper_dataset"]

TABLE1_EPOCHS: tuple[int, ...] = (1, 50, 250)


def _t1(batch_var: float, est_var: float, est_pct: float) -> dict[str, float]:
    return {"batch_var": batch_var, "est_var": est_var, "est_pct": est_pct}


TABLE1: dict[str, dict[int, dict[str, float]]] = {
    "sg_gaussian": {1: _t1(1.49e4, 0.0, 0.00), 50: _t1(5.28e2, 0.0, 0.00), 250: _t1(4.53e1, 0.0, 0.00)},
    "reparam": {1: _t1(6.97e4, 3.26e5, 82.36), 50: _t1(2.96e3, 3.28e4, 91.72), 250: _t1(6.52e2, 1.58e4, 96.04)},
    "sg_bernoulli": {1: _t1(2.18e5, 0.0, 0.00), 50: _t1(4.53e6, 0.0, 0.00), 250: _t1(1.12e5, 0.0, 0.00)},
    "gumbel": {1: _t1(6.29e4, 1.85e5, 74.64), 50: _t1(2.12e4, 2.32e5, 91.63), 250: _t1(1.20e4, 2.00e5, 94.34)},
    "reinforce": {1: _t1(8.22e4, 2.07e7, 99.60), 50: _t1(4.86e5, 8.30e7, 99.42), 250: _t1(2.33e5, 3.29e7, 99.30)},
}

TABLE2: dict[str, dict[str, float]] = {
    "sg_gaussian": {"bpd": 6.718, "mse": 3.011},
    "reparam": {"bpd": 6.722, "mse": 3.059},
    "sg_bernoulli": {"bpd": 6.900, "mse": 6.103},
    "gumbel": {"bpd": 6.990, "mse": 7.670},
    "reinforce": {"bpd": 7.208, "mse": 9.289},
}

CONVERGENCE: dict[str, float] = {"target_bpd": 6.73, "sg_gaussian": 45, "reparam": 90}

TABLE3: dict[str, dict[str, tuple[float, float]]] = {
    "mnist": {
        "none_sg_gaussian": (2.36, 0.07), "reparam": (1.95, 0.04), "reparam_sg": (1.83, 0.03),
        "none_sg_bernoulli": (2.74, 0.06), "gumbel": (2.50, 0.02), "gumbel_sg": (2.37, 0.04),
        "reinforce": (2.99, 0.08), "reinforce_sg": (2.93, 0.02),
    },
    "imagenet32": {
        "none_sg_gaussian": (5.99, 0.01), "reparam": (5.81, 0.02), "reparam_sg": (5.70, 0.01),
        "none_sg_bernoulli": (6.46, 0.01), "gumbel": (6.31, 0.01), "gumbel_sg": (6.20, 0.01),
        "reinforce": (6.88, 0.01), "reinforce_sg": (6.78, 0.01),
    },
    "cifar10": {
        "none_sg_gaussian": (5.78, 0.03), "reparam": (5.71, 0.01), "reparam_sg": (5.53, 0.01),
        "none_sg_bernoulli": (6.72, 0.01), "gumbel": (6.21, 0.01), "gumbel_sg": (6.20, 0.02),
        "reinforce": (6.74, 0.01), "reinforce_sg": (6.67, 0.01),
    },
}

TABLE4: dict[str, dict[str, float]] = {
    "mnist": {
        "none_sg_gaussian": 330.77, "reparam": 155.15, "reparam_sg": 165.76,
        "none_sg_bernoulli": 91.82, "gumbel": 94.64, "gumbel_sg": 96.24,
        "reinforce": 109.67, "reinforce_sg": 128.55,
    },
    "imagenet32": {
        "none_sg_gaussian": 478.43, "reparam": 382.87, "reparam_sg": 533.20,
        "none_sg_bernoulli": 534.29, "gumbel": 368.02, "gumbel_sg": 404.57,
        "reinforce": 294.88, "reinforce_sg": 381.27,
    },
    "cifar10": {
        "none_sg_gaussian": 550.70, "reparam": 427.79, "reparam_sg": 577.25,
        "none_sg_bernoulli": 243.69, "gumbel": 446.75, "gumbel_sg": 442.58,
        "reinforce": 303.33, "reinforce_sg": 367.10,
    },
}

TABLE9: dict[str, dict[str, float]] = {
    "mnist": {
        "none_sg_gaussian": 1.79, "reparam": 1.36, "reparam_sg": 1.60,
        "none_sg_bernoulli": 10.66, "gumbel": 5.63, "gumbel_sg": 6.02,
        "reinforce": 11.59, "reinforce_sg": 8.20,
    },
    "imagenet32": {
        "none_sg_gaussian": 17.30, "reparam": 14.56, "reparam_sg": 12.69,
        "none_sg_bernoulli": 28.15, "gumbel": 29.34, "gumbel_sg": 23.04,
        "reinforce": 50.56, "reinforce_sg": 43.25,
    },
    "cifar10": {
        "none_sg_gaussian": 10.28, "reparam": 12.54, "reparam_sg": 8.18,
        "none_sg_bernoulli": 39.56, "gumbel": 21.12, "gumbel_sg": 20.36,
        "reinforce": 41.50, "reinforce_sg": 36.26,
    },
}

TAYLOR_BIAS: dict[str, float] = {"sg": 212.9, "gumbel": 6100.0, "reinforce": 593.1}
#: The estimators of the Taylor-bias check, in the paper's order, with their names in its text.
TAYLOR_LABELS: dict[str, str] = {"sg": "Silent Gradients (Taylor)", "gumbel": "Gumbel-Softmax",
                                 "reinforce": "REINFORCE (running-average baseline: decides)",
                                 "reinforce_per_image": "REINFORCE (per-image baseline: sensitivity)"}
#: the same, short (the claims row's one line)
TAYLOR_SHORT: dict[str, str] = {"sg": "SG", "gumbel": "Gumbel", "reinforce": "REINFORCE",
                                "reinforce_per_image": "REINFORCE per-image"}
#: the paper's value each Taylor-check estimator is compared with (it reports one REINFORCE, baseline not specified)
TAYLOR_PAPER_KEY: dict[str, str] = {"sg": "sg", "gumbel": "gumbel", "reinforce": "reinforce",
                                    "reinforce_per_image": "reinforce"}

#: Rows of Tables 3, 4 and 9 as the paper lays them out: (row label, "Without SG" method, "With SG" method).
#: The "None" rows have no "Without SG" entry.
LEARNABLE_ROWS: tuple[tuple[str, str | None, str], ...] = (
    ("Continuous None", None, "none_sg_gaussian"),
    ("Reparameterization", "reparam", "reparam_sg"),
    ("Discrete None", None, "none_sg_bernoulli"),
    ("Gumbel-Softmax", "gumbel", "gumbel_sg"),
    ("REINFORCE", "reinforce", "reinforce_sg"),
)

DATASET_LABELS: dict[str, str] = {
    "mnist": "MNIST",
    "mnist5k": "MNIST (5k subset)",
    "imagenet32": "ImageNet 32x32",
    "cifar10": "CIFAR-10",
    "fashion_mnist": "Fashion-MNIST",
}

PAPER_DATASETS: tuple[str, ...] = ("mnist", "imagenet32", "cifar10")

#: our dataset id -> the paper column it is compared with (None: the paper has no such column)
PAPER_DATASET: dict[str, str | None] = {
    "mnist": "mnist", "mnist5k": "mnist", "imagenet32": "imagenet32", "cifar10": "cifar10",
    "fashion_mnist": None,
}


def paper_dataset(dataset: str) -> str | None:
    """The paper's dataset column our ``dataset`` is compared with (``mnist5k`` -> ``mnist``), or None."""
    return PAPER_DATASET.get(dataset)
