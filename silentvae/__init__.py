"""silentvae: Silent Gradients (zero-variance encoder gradients) for VAEs.

Reference implementation of Shao, Liu & Van den Broeck, "Zero-Variance Gradients for
Variational Autoencoders" (arXiv 2508.03587).
"""

__version__ = "0.1.0"
