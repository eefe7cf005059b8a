"""The README's "Use Silent Gradients in your own VAE" examples run as written and do what they say."""

import math
import re
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal, kl_divergence

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Use Silent Gradients in your own VAE"


def readme_section() -> str:
    return README.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]


def readme_examples() -> list[str]:
    """The python code blocks of the README's section on using SG in your own VAE, in order."""
    return re.findall(r"```python\n(.*?)```", readme_section(), re.S)


def readme_prints() -> list[str]:
    """For each python block, the ```text block right after it: what the README says the example prints."""
    return re.findall(r"```python\n.*?```\n+[^`]*?```text\n(.*?)```", readme_section(), re.S)


def _run(number: int, capsys) -> dict:
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(readme_examples()[number], f"README example {number + 1}", "exec"), namespace)
    print(capsys.readouterr().out, end="")  # shown with -s / -rA
    return namespace


def test_the_section_has_the_three_examples():
    blocks = readme_examples()
    assert len(blocks) == 3
    assert "Normal" in blocks[0] and "nn.Linear" in blocks[0] and "sigma2=0.01" in blocks[0]
    assert "Bernoulli" in blocks[1]
    assert "split_gradient" in blocks[2] and "silent_weight" in blocks[2] and "encoder_frozen" in blocks[2]


def test_fixed_variance_example_is_the_exact_elbo(capsys):
    ns = _run(0, capsys)
    x, q, decoder, elbo = ns["x"], ns["q"], ns["decoder"], ns["elbo"]
    assert elbo.shape == (32,) and ns["encoder"][1].weight.grad is not None
    with torch.no_grad():  # a large Monte Carlo estimate of E_q log N(x; W z + b, 0.01 I) - KL agrees
        z = q.sample((4000,))
        ll = Normal(decoder(z), 0.1).log_prob(x.flatten(1)).sum(-1).double()
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1).double()
        se = ll.std(0) / math.sqrt(4000)
        assert torch.all((ll.mean(0) - kl - elbo.double()).abs() < 5 * se + 1e-4 * elbo.abs().double())


def test_bernoulli_example_gives_exact_gradients_to_the_logits(capsys):
    ns = _run(1, capsys)
    elbo, encoder = ns["elbo"], ns["encoder"]
    assert elbo.shape == (32,) and torch.isfinite(elbo).all()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_algorithm_1_example_trains_and_freezes_the_encoder(capsys, monkeypatch):
    snapshots = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):  # the encoder's first weight after every optimizer step
        out = real_step(self, *args, **kwargs)
        snapshots.append(self.param_groups[0]["params"][0].detach().clone())
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    ns = _run(2, capsys)
    steps_per_epoch = len(ns["loader"])
    assert len(snapshots) == 3 * steps_per_epoch
    # epochs 1-2 move the encoder; from the cut-off (epoch 3) it stays where epoch 2 left it
    assert not torch.equal(snapshots[0], snapshots[2 * steps_per_epoch - 1])
    frozen = snapshots[2 * steps_per_epoch - 1]
    assert all(torch.equal(s, frozen) for s in snapshots[2 * steps_per_epoch:])
    assert ns["w"] == 0.0 and torch.isfinite(ns["elbo"]).all()


@pytest.mark.parametrize("number", [0, 1, 2])
def test_examples_print_what_the_readme_says(number, capsys):
    """Each example seeds itself: run in a fresh namespace, it prints exactly the lines quoted under it."""
    assert len(readme_prints()) == 3
    namespace: dict = {}
    exec(compile(readme_examples()[number], f"README example {number + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert out == readme_prints()[number]
    assert "ELBO" in out and "nan" not in out.lower()


def test_the_tutorial_lines_the_readme_quotes_are_the_notebooks_outputs():
    """The README quotes lines the tutorial prints (seeded); nbval checks the notebook re-prints them."""
    import nbformat

    quoted = re.search(r"<!-- tutorial output -->\n```text\n(.*?)```", readme_section(), re.S).group(1)
    nb = nbformat.read(README.parent / "notebooks" / "tutorial.ipynb", as_version=4)
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    lines = [line for line in quoted.splitlines() if line.strip() and not line.startswith("...")]
    assert len(lines) >= 5
    for line in lines:
        assert line in printed.splitlines(), line
