"""The README's "Use Silent Gradients in your own VAE" example runs as written and gives an exact gradient."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def _example_source() -> str:
    text = README.read_text()
    section = text.split("## Use Silent Gradients in your own VAE", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_and_matches_monte_carlo():
    torch.manual_seed(0)
    latent_dim, num_pixels, batch = 5, 12, 4
    enc = torch.nn.Linear(num_pixels, 2 * latent_dim).double()

    def encoder(x):
        h = enc(x.flatten(1))
        return h[:, :latent_dim], torch.nn.functional.softplus(h[:, latent_dim:])

    x = torch.rand(batch, num_pixels, dtype=torch.float64)
    namespace = {"encoder": encoder, "x": x, "latent_dim": latent_dim, "num_pixels": num_pixels}
    source = _example_source().replace("torch.nn.Linear(latent_dim, num_pixels)",
                                       "torch.nn.Linear(latent_dim, num_pixels).double()")
    exec(compile(source, "README example", "exec"), namespace)
    recon, lin, mean, var = namespace["recon"], namespace["lin"], namespace["mean"], namespace["var"]
    assert recon.shape == (batch,)
    assert enc.weight.grad is not None and torch.isfinite(enc.weight.grad).all()
    # The closed form equals a large Monte-Carlo estimate of E_q log N(x; Wz + b, 0.01 I).
    with torch.no_grad():
        z = mean + var.sqrt() * torch.randn(20000, *mean.shape, dtype=torch.float64)
        ll = torch.distributions.Normal(lin(z), 0.1).log_prob(x).sum(-1)
        se = ll.std(0) / 20000 ** 0.5
        assert torch.all((ll.mean(0) - recon).abs() < 5 * se + 1e-9)
