"""silentvae: Silent Gradients (zero-variance encoder gradients) for VAEs.

Reference implementation of Shao, Liu & Van den Broeck, "Zero-Variance Gradients for
Variational Autoencoders" (arXiv 2508.03587). The public API is what ``__all__`` lists:

* :func:`silent_elbo` -- the per-example ELBO of a mean-field q(z|x) (torch.distributions Normal / Bernoulli /
  Independent, or the package's posteriors) under a linear Gaussian decoder, with the exact E_q[log p(x|z)];
* Algorithm 1 in your own loop: :func:`silent_weight`, :func:`encoder_frozen`, :func:`split_gradient`;
* the linear decoders, posteriors and closed forms they build on.

The reproduction pipeline (:mod:`silentvae.engine`, :mod:`silentvae.run`, :mod:`silentvae.jobs`, ...) is imported
by name, not from here.
"""

from .algorithm1 import encoder_frozen, silent_weight, split_gradient
from .analytic import expected_loglik_fixed, expected_loglik_learnable
from .elbo import silent_elbo
from .metrics import bits_per_dim
from .models import LinearDecoder, LinearPrecisionDecoder
from .moments import LatentMoments, bernoulli_moments, gaussian_moments
from .posteriors import BernoulliPosterior, GaussianPosterior

__version__ = "0.1.0"  # the same as pyproject.toml's version (tests/test_packaging.py checks)

__all__ = ["silent_elbo", "silent_weight", "encoder_frozen", "split_gradient", "LinearDecoder",
           "LinearPrecisionDecoder", "GaussianPosterior", "BernoulliPosterior", "LatentMoments", "gaussian_moments",
           "bernoulli_moments", "expected_loglik_fixed", "expected_loglik_learnable", "bits_per_dim", "__version__"]
