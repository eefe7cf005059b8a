"""The methods the experiments compare: one :class:`Method` per (experiment, id); every table, rule and label
reads this registry.

* Fixed variance (Table 2): a linear decoder N(x; Wz + b, sigma^2 I) and one encoder-gradient estimator
  (``estimator``): Silent Gradients (``sg``, the closed form of E_q log p(x|z)), reparameterization,
  Gumbel-Softmax or REINFORCE. Each method searches the learning-rate grid.
* Learnable variance (Tables 3, 4, 9): a nonlinear decoder trained by ``estimator``; with ``silent_decoder`` a
  linear decoder with learnable precision is trained beside it and its silent gradient is mixed into the
  encoder's (Eq. 8, Algorithm 1). "X + SG" takes its ``baseline`` X's selected learning rate and searches
  annealing rate x cut-off; "None + SG" (``estimator="none"``: the silent gradient alone) searches learning
  rate x cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Method", "FIXED_METHODS", "LEARNABLE_METHODS", "METHODS", "label", "with_sg", "INITS", "DEFAULT_INIT"]


@dataclass(frozen=True)
class Method:
    """One compared method of one experiment.

    ``grid`` names the values it searches (see :data:`silentvae.pipeline.plan.GRIDS`): ``"lr"``, ``"lr_cutoff"`` or
    ``"anneal_cutoff"`` (the last inherits the learning rate selected for ``baseline``)."""

    id: str
    experiment: str           # "fixed" | "learnable"
    latent: str               # "gaussian" | "bernoulli"
    estimator: str            # "sg" | "reparam" | "gumbel" | "reinforce" | "none"
    silent_decoder: bool      # learnable: a linear learnable-precision decoder's silent gradient is mixed in
    baseline: str | None      # learnable "X + SG": X, whose selected learning rate it takes
    grid: str                 # "lr" | "lr_cutoff" | "anneal_cutoff"
    label: str                # the paper's name for it

    def run_fields(self) -> dict[str, Any]:
        """Its :class:`silentvae.training.run.RunConfig` fields (the fixed experiment has no silent decoder)."""
        fields: dict[str, Any] = {"latent": self.latent, "estimator": self.estimator}
        if self.experiment == "learnable":
            fields["silent"] = self.silent_decoder
        return fields


def _fixed(method_id: str, latent: str, estimator: str, label: str) -> Method:
    return Method(method_id, "fixed", latent, estimator, False, None, "lr", label)


def _learnable(method_id: str, latent: str, estimator: str, label: str, baseline: str | None = None) -> Method:
    silent_decoder = estimator == "none" or baseline is not None
    grid = "lr_cutoff" if estimator == "none" else "anneal_cutoff" if baseline else "lr"
    return Method(method_id, "learnable", latent, estimator, silent_decoder, baseline, grid, label)


FIXED_METHODS: dict[str, Method] = {m.id: m for m in (
    _fixed("sg_gaussian", "gaussian", "sg", "Continuous Silent Gradients"),
    _fixed("reparam", "gaussian", "reparam", "Reparameterization"),
    _fixed("sg_bernoulli", "bernoulli", "sg", "Discrete Silent Gradients"),
    _fixed("gumbel", "bernoulli", "gumbel", "Gumbel-Softmax"),
    _fixed("reinforce", "bernoulli", "reinforce", "REINFORCE"),
)}

LEARNABLE_METHODS: dict[str, Method] = {m.id: m for m in (
    _learnable("none_sg_gaussian", "gaussian", "none", "Continuous None + SG"),
    _learnable("reparam", "gaussian", "reparam", "Reparameterization"),
    _learnable("reparam_sg", "gaussian", "reparam", "Reparameterization + SG", baseline="reparam"),
    _learnable("none_sg_bernoulli", "bernoulli", "none", "Discrete None + SG"),
    _learnable("gumbel", "bernoulli", "gumbel", "Gumbel-Softmax"),
    _learnable("gumbel_sg", "bernoulli", "gumbel", "Gumbel-Softmax + SG", baseline="gumbel"),
    _learnable("reinforce", "bernoulli", "reinforce", "REINFORCE"),
    _learnable("reinforce_sg", "bernoulli", "reinforce", "REINFORCE + SG", baseline="reinforce"),
)}

#: experiment -> method id -> Method
METHODS: dict[str, dict[str, Method]] = {"fixed": FIXED_METHODS, "learnable": LEARNABLE_METHODS}


def label(experiment: str, method_id: str) -> str:
    """The paper's name of a method (an unknown id stands for itself)."""
    method = METHODS[experiment].get(method_id)
    return method.label if method is not None else method_id


def with_sg(baseline: str) -> str:
    """The learnable "X + SG" method of baseline X."""
    return next(m.id for m in LEARNABLE_METHODS.values() if m.baseline == baseline)


#: Initialisations (the paper leaves them open): "pytorch" keeps nn.Linear's default init everywhere;
#: "zero_decoder" starts the linear decoders' weight W (and W_mu) at 0; "zero_decoder_head" (the default) also
#: gives the encoder head its data-dependent init (:meth:`silentvae.models.MnistEncoder.standardize_head_`).
#: README "Choices the paper leaves open" and tools/init_ablation.py measure what each does to each estimator.
INITS = ("pytorch", "zero_decoder", "zero_decoder_head")
#: ``RunConfig.init``'s default, which runs saved before the option existed used.
DEFAULT_INIT = "zero_decoder_head"
