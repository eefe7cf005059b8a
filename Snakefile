# silentvae: reproduce "Zero-Variance Gradients for Variational Autoencoders" (arXiv 2508.03587).
#
#   snakemake --cores 8 --resources gpu=8            # paper protocol (config/paper.yaml), up to 8 GPUs
#   snakemake --cores 4 --resources gpu=4 --config jobs_per_gpu=4   # the same on one GPU, 4 jobs sharing it
#   snakemake --profile profiles/embedded            # offline reduced run on 2 CPU cores (config/embedded.yaml)
#
# Table of contents (each training/diagnostic job executes one papermill notebook from notebooks/):
#   train_fixed      fixed-variance linear decoder runs       -> Table 2, Figure 2, convergence (Sec. 3.2)
#   train_learnable  learnable-variance runs, with/without SG -> Tables 3, 4, 9, Figures 3-5 (Sec. 4.2)
#   train_stack      engine: stacked -- a method's grid trained together in one job (either experiment)
#   select           best grid point on validation BPD        -> results/selected/
#   variance         gradient-variance decomposition          -> Table 1
#   taylor           Taylor-bias check vs enumeration         -> Sec. 4.1
#   report           tables, figures, report.html             -> results/tables, results/figures
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from silentvae.pipeline import make_plan

if not workflow.overwrite_configfiles:  # no --configfile: the paper protocol (--configfile replaces it, not merges)
    configfile: "config/paper.yaml"
validate(config, "config/schema.yaml")

ENV = "environment.yml"  # each rule's conda env (with --use-conda); otherwise jobs use snakemake's environment

R = config["results"]
PLAN = make_plan({**config, "data_root": str(Path(config["data_root"]).resolve())})
GPU = 1 if config.get("device", "auto") == "auto" else 0
THREADS = config.get("threads_per_job", 1)
PY = shlex.quote(sys.executable)            # the environment snakemake runs in (.venv)
JOBS_PER_GPU = config.get("jobs_per_gpu", 1)
ON_DEVICE = f"{PY} -m silentvae.gpus --jobs-per-gpu {JOBS_PER_GPU} --"  # claims a GPU (or none: CPU) for the job


def papermill(notebook, out_nb, **params):
    """Shell command executing a notebook with papermill on a claimed device."""
    return (f"{ON_DEVICE} {PY} -m papermill --cwd {shlex.quote(workflow.basedir)} --log-output --no-progress-bar "
            f"{notebook} {out_nb} -y {shlex.quote(json.dumps(params))}")


NOTEBOOK = {"fixed": "notebooks/fixed_variance.ipynb", "learnable": "notebooks/learnable_variance.ipynb"}
STACK_OF = {run_id: stack for stack, run_ids in PLAN.stacks.items() for run_id in run_ids}


def train_job(notebook, out_nb, run_ids, done_json=""):
    """One training job: a single run, or a stack of runs trained together (engine: stacked)."""
    runs = [{"id": r, "config": PLAN.runs[r].config, "inherit": PLAN.runs[r].inherit, "out_dir": f"{R}/runs/{r}"}
            for r in run_ids]
    return papermill(notebook, out_nb, runs=runs, selections_dir=f"{R}/selected", device=config["device"],
                     threads=THREADS, stack_size=config.get("stack_size", "auto"), done_json=done_json,
                     jobs_per_gpu=JOBS_PER_GPU)


def result_json(run_id):
    return f"{R}/runs/{run_id}/result.json"


def run_done(run_id):
    """The file that says a run has finished: its result.json, or its stack's done file."""
    return f"{R}/stacks/{STACK_OF[run_id]}.json" if run_id in STACK_OF else result_json(run_id)


def selection_inputs(run_ids):
    """The selections whose best values the runs inherit (a method with SG takes its baseline's learning rate)."""
    return sorted({f"{R}/selected/{sel}.json" for r in run_ids for sel in PLAN.runs[r].selections})


def selection_json(sel):
    return f"{R}/selected/{sel}.json"


REPORT_INPUTS = ([selection_json(s) for s in PLAN.selections]
                 + sorted({run_done(r) for runs in PLAN.final_runs.values() for r in runs})
                 + [f"{R}/{job}.json" for job in PLAN.variance]
                 + [f"{R}/{job}.json" for job in PLAN.taylor])


rule all:
    input:
        f"{R}/report.html",


rule train_fixed:
    input:
        NOTEBOOK["fixed"],
        lambda wildcards: selection_inputs([f"fixed/{wildcards.run}"]),
    output:
        result=f"{R}/runs/fixed/{{run}}/result.json",
        notebook=f"{R}/notebooks/runs/fixed/{{run}}.ipynb",
    log:
        f"{R}/logs/fixed/{{run}}.log",
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        command=lambda wildcards, input, output: train_job(input[0], output.notebook, [f"fixed/{wildcards.run}"]),
    conda:
        ENV
    shell:
        "{params.command} > {log} 2>&1"


rule train_learnable:
    input:
        NOTEBOOK["learnable"],
        lambda wildcards: selection_inputs([f"learnable/{wildcards.run}"]),
    output:
        result=f"{R}/runs/learnable/{{run}}/result.json",
        notebook=f"{R}/notebooks/runs/learnable/{{run}}.ipynb",
    log:
        f"{R}/logs/learnable/{{run}}.log",
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        command=lambda wildcards, input, output: train_job(input[0], output.notebook, [f"learnable/{wildcards.run}"]),
    conda:
        ENV
    shell:
        "{params.command} > {log} 2>&1"


rule train_stack:
    input:
        lambda wildcards: NOTEBOOK[wildcards.stack.split("/")[0]],
        lambda wildcards: selection_inputs(PLAN.stacks[wildcards.stack]),
    output:
        done=f"{R}/stacks/{{stack}}.json",
        notebook=f"{R}/notebooks/stacks/{{stack}}.ipynb",
    log:
        f"{R}/logs/stacks/{{stack}}.log",
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        command=lambda wildcards, input, output: train_job(input[0], output.notebook, PLAN.stacks[wildcards.stack],
                                                           done_json=output.done),
    conda:
        ENV
    shell:
        "{params.command} > {log} 2>&1"


rule select:
    input:
        lambda wildcards: sorted({run_done(r) for r in PLAN.selections[wildcards.sel]}),
    output:
        f"{R}/selected/{{sel}}.json",
    log:
        f"{R}/logs/selected/{{sel}}.log",
    params:
        candidates=lambda wildcards: json.dumps({r: result_json(r) for r in PLAN.selections[wildcards.sel]}),
        py=PY,
    conda:
        ENV
    shell:
        "{params.py} -m silentvae.pipeline select {output:q} {params.candidates:q} > {log} 2>&1"


rule variance:
    input:
        "notebooks/variance_decomposition.ipynb",
        lambda wildcards: selection_json(PLAN.variance[f"variance/{wildcards.job}"]["selection"]),
    output:
        result=f"{R}/variance/{{job}}.json",
        notebook=f"{R}/notebooks/variance/{{job}}.ipynb",
    log:
        f"{R}/logs/variance/{{job}}.log",
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        command=lambda wildcards, input, output: papermill(
            input[0], output.notebook, settings=PLAN.variance[f"variance/{wildcards.job}"],
            selection_path=input[1], runs_dir=f"{R}/runs", out_json=output.result,
            device=config["device"], threads=THREADS),
    conda:
        ENV
    shell:
        "{params.command} > {log} 2>&1"


rule taylor:
    input:
        "notebooks/taylor_bias.ipynb",
    output:
        result=f"{R}/taylor/{{dataset}}.json",
        notebook=f"{R}/notebooks/taylor/{{dataset}}.ipynb",
    log:
        f"{R}/logs/taylor/{{dataset}}.log",
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        command=lambda wildcards, input, output: papermill(
            input[0], output.notebook, settings=PLAN.taylor[f"taylor/{wildcards.dataset}"],
            out_json=output.result, work_dir=f"{R}/taylor/{wildcards.dataset}",
            device=config["device"], threads=THREADS),
    conda:
        ENV
    shell:
        "{params.command} > {log} 2>&1"


rule report:
    input:
        "notebooks/report.ipynb",
        REPORT_INPUTS,
    output:
        notebook=f"{R}/report.ipynb",
        html=f"{R}/report.html",
    log:
        f"{R}/logs/report.log",
    params:
        command=lambda wildcards, input, output: papermill(
            input[0], output.notebook, results_dir=R, output_dir=R, config=config, not_run=PLAN.not_run),
        py=PY,
    conda:
        ENV
    shell:
        "({params.command} && {params.py} -m nbconvert --to html --no-input {output.notebook:q} --output report.html) > {log} 2>&1"
