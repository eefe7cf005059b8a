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


def params_cell(text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


NOTEBOOK_SOURCES = {
    "fixed_variance": [
        "# Fixed-variance linear decoder (Section 3.2)\n\nTraining runs of Table 2: a conv encoder (Table 5) and "
        "a linear decoder N(x; Wz + b, sigma^2 I), sigma^2 = 0.01, trained with one estimator. Silent Gradients use "
        "the closed form E_q||x - Wz - b||^2 = ||x - Wm - b||^2 + sum_i ||w_i||^2 Var(z_i). One run per job, or "
        "(`engine: stacked`) a method's whole learning-rate grid trained together by one vmapped step.",
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
        "One run per job, or (`engine: stacked`) a method's grid trained together by one vmapped step.",
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
