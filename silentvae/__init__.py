"""silentvae: Silent Gradients (zero-variance encoder gradients) for VAEs.

Reference implementation of Shao, Liu & Van den Broeck, "Zero-Variance Gradients for
Variational Autoencoders" (arXiv 2508.03587). The public API is what ``__all__`` lists:

* :func:`silent_elbo` -- the per-example ELBO of a mean-field q(z|x) (torch.distributions Normal / Bernoulli /
  Independent, or the package's posteriors) under a linear Gaussian decoder, with the exact E_q[log p(x|z)];
* Algorithm 1 in your own loop: :func:`silent_weight`, :func:`encoder_frozen`, :func:`split_gradient`;
* the linear decoders, posteriors and closed forms they build on.

The names load on first use (PEP 562), so ``python -m silentvae.pipeline.gpus`` and the other torch-free modules start
without importing torch. The reproduction pipeline (:mod:`silentvae.training.engine`, :mod:`silentvae.training.run`,
:mod:`silentvae.pipeline.jobs`, ...) is imported by module name, not from here.
"""

from __future__ import annotations

import importlib as _importlib
from types import ModuleType as _ModuleType
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"  # the same as pyproject.toml's version (tests/test_packaging.py checks)

#: public name -> the module that defines it
_EXPORTS = {
    "silent_elbo": "elbo",
    "silent_weight": "algorithm1", "encoder_frozen": "algorithm1", "split_gradient": "algorithm1",
    "LinearDecoder": "models", "LinearPrecisionDecoder": "models",
    "GaussianPosterior": "posteriors", "BernoulliPosterior": "posteriors",
    "LatentMoments": "moments", "gaussian_moments": "moments", "bernoulli_moments": "moments",
    "expected_loglik_fixed": "analytic", "expected_loglik_learnable": "analytic",
    "bits_per_dim": "metrics",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'silentvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API, the submodules loaded so far and the module's dunders: each once."""
    submodules = {n for n, v in globals().items()
                  if isinstance(v, _ModuleType) and v.__name__.startswith(f"{__name__}.")}
    return sorted({*__all__, *submodules, *(n for n in globals() if n.startswith("__"))})


if _TYPE_CHECKING:  # static type checkers see the names directly
    from .algorithm1 import encoder_frozen, silent_weight, split_gradient
    from .analytic import expected_loglik_fixed, expected_loglik_learnable
    from .elbo import silent_elbo
    from .metrics import bits_per_dim
    from .models import LinearDecoder, LinearPrecisionDecoder
    from .moments import LatentMoments, bernoulli_moments, gaussian_moments
    from .posteriors import BernoulliPosterior, GaussianPosterior
