"""Discrete latents learn on real data: the fixed-variance Bernoulli VAEs of Table 2 -- SG, Gumbel-Softmax and
REINFORCE -- do not collapse into an image-independent code (the failure that the linear decoder's zero
initialisation and the encoder head's data-dependent init prevent: silentvae.models)."""

import math

import pytest
import torch

from silentvae.training.run import RunConfig, load_run, load_splits
from silentvae.training.engine import train


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["sg", "gumbel", "reinforce"])
def test_bernoulli_code_depends_on_the_image_and_reconstructs(tmp_path, estimator):
    cfg = RunConfig(experiment="fixed", latent="bernoulli", estimator=estimator, latent_dim=200, channels=8,
                    lr=1e-3, epochs=2, val_limit=200, dataset="mnist5k")
    history = train(cfg, tmp_path, log=lambda *_: None)
    _, models, _ = load_run(tmp_path / "last.pt")
    _, val = load_splits(cfg)
    x = val.images
    with torch.no_grad():
        p = models["encoder"](x).probs
    codes = {tuple(row) for row in (p > 0.5).int().tolist()}
    mean_image_mse = (x - x.mean(0)).square().flatten(1).sum(-1).mean().item()
    final = history[-1]
    assert final["val_kld"] < 0.95 * cfg.latent_dim * math.log(2), final  # not a deterministic code ...
    assert len(codes) > len(x) // 2 and p.std(0).mean() > 0.05            # ... and one that varies with the image
    assert final["val_mse"] < 0.9 * mean_image_mse, (final, mean_image_mse)  # better than the mean image
