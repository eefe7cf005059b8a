# silentvae: reproduce "Zero-Variance Gradients for Variational Autoencoders" (arXiv 2508.03587).
#
#   snakemake --cores 8 --resources gpu=8            # paper protocol (config/paper.yaml), up to 8 GPUs
#   snakemake --cores 4 --resources gpu=4 --config jobs_per_gpu=4   # the same on one GPU, 4 jobs sharing it
#   snakemake --profile profiles/embedded            # offline reduced run on 2 CPU cores (config/embedded.yaml)
#
# Table of contents (each training/diagnostic job executes one papermill notebook from notebooks/):
#   train_fixed      fixed-variance linear decoder runs       -> Table 2, Figure 2, convergence (Sec. 3.2)
#   train_learnable  learnable-variance runs, with/without SG -> Tables 3, 4, 9, Figures 3-5 (Sec. 4.2)
#   train_stack_*    engine: stacked -- a method's grid trained together in one job (a rule per stack)
#   select           best grid point on validation BPD        -> results/selected/
#   variance         gradient-variance decomposition          -> Table 1
#   taylor           Taylor-bias check vs enumeration         -> Sec. 4.1
#   report           tables, figures, report.html             -> results/tables, results/figures
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

from silentvae.pipeline import check_results_dir, make_plan

if not workflow.overwrite_configfiles:  # no --configfile: the paper protocol (--configfile replaces it, not merges)
    configfile: "config/paper.yaml"
validate(config, "config/schema.yaml")
check_results_dir(config["results"], os.getcwd())  # not empty, not "/", not another working directory's


onstart:
    check_results_dir(config["results"], os.getcwd(), claim=True)


ENV = "environment.yml"  # each rule's conda env (with --use-conda); otherwise jobs use snakemake's environment

R = config["results"]
PLAN = make_plan({**config, "data_root": str(Path(config["data_root"]).resolve())})
GPU = 1 if config.get("device", "auto") == "auto" else 0
THREADS = config.get("threads_per_job", 1)
PY = shlex.quote(sys.executable)            # the environment snakemake runs in (.venv)
JOBS_PER_GPU = config.get("jobs_per_gpu", 1)
ON_DEVICE = f"{PY} -m silentvae.gpus --jobs-per-gpu {JOBS_PER_GPU} --"  # claims a GPU (or none: CPU) for the job


def papermill(notebook, out_nb, **params):
    """Shell command executing a notebook with papermill on a claimed device. Papermill reads -y with PyYAML's
    safe loader, so the parameters are written by PyYAML's safe dumper: every value comes back with its type
    (JSON text would not: YAML 1.1 reads 1e-05 as a string)."""
    text = yaml.safe_dump(params, default_flow_style=True, width=float("inf")).strip()
    return (f"{ON_DEVICE} {PY} -m papermill --cwd {shlex.quote(workflow.basedir)} --log-output --no-progress-bar "
            f"{shlex.quote(notebook)} {shlex.quote(out_nb)} -y {shlex.quote(text)}")


NOTEBOOK = {"fixed": "notebooks/fixed_variance.ipynb", "learnable": "notebooks/learnable_variance.ipynb"}
STACK_OF = {run_id: stack for stack, run_ids in PLAN.stacks.items() for run_id in run_ids}


def train_job(notebook, out_nb, run_ids, done_json=""):
    """One training job: a single run, or a stack of runs trained together (engine: stacked)."""
    runs = [{"id": r, "config": PLAN.runs[r].config, "inherit": PLAN.runs[r].inherit, "out_dir": f"{R}/runs/{r}"}
            for r in run_ids]
    return papermill(notebook, out_nb, runs=runs, selections_dir=f"{R}/selected", device=config["device"],
                     threads=THREADS, stack_size=config.get("stack_size", "auto"), done_json=done_json,
                     jobs_per_gpu=JOBS_PER_GPU, compile=config.get("compile", False))


def result_json(run_id):
    """The file that says a run has finished (an output of its training job, single or stacked)."""
    return f"{R}/runs/{run_id}/result.json"


def run_params(run_ids):
    """What fixes the runs of a job (a rule param: Snakemake reruns the job when it changes)."""
    return [{"id": r, "config": PLAN.runs[r].config, "inherit": PLAN.runs[r].inherit} for r in run_ids]


def single_runs(experiment):
    """Wildcard constraint matching the runs of ``experiment`` trained one per job (not in a stack)."""
    names = [re.escape(r.removeprefix(f"{experiment}/")) for r, spec in PLAN.runs.items()
             if spec.experiment == experiment and r not in STACK_OF]
    return "|".join(names) or "(?!)"  # (?!) matches nothing


def stack_rule_name(stack):
    return f"train_stack_{re.sub(r'[^A-Za-z0-9_]', '_', stack)}"


def stack_command(stack):
    return lambda wildcards, input, output: train_job(input[0], output.notebook, PLAN.stacks[stack],
                                                      done_json=output.done)


def selection_inputs(run_ids):
    """The selections whose best values the runs inherit (a method with SG takes its baseline's learning rate)."""
    return sorted({f"{R}/selected/{sel}.json" for r in run_ids for sel in PLAN.runs[r].selections})


def selection_json(sel):
    return f"{R}/selected/{sel}.json"


REPORT_INPUTS = ([selection_json(s) for s in PLAN.selections]
                 + [result_json(r) for runs in PLAN.final_runs.values() for r in runs]
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
    wildcard_constraints:
        run=single_runs("fixed"),
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        runs=lambda wildcards: run_params([f"fixed/{wildcards.run}"]),
        command=lambda wildcards, input, output: train_job(input[0], output.notebook, [f"fixed/{wildcards.run}"]),
    conda:
        ENV
    shell:
        "{params.command} > {log:q} 2>&1"


rule train_learnable:
    input:
        NOTEBOOK["learnable"],
        lambda wildcards: selection_inputs([f"learnable/{wildcards.run}"]),
    output:
        result=f"{R}/runs/learnable/{{run}}/result.json",
        notebook=f"{R}/notebooks/runs/learnable/{{run}}.ipynb",
    log:
        f"{R}/logs/learnable/{{run}}.log",
    wildcard_constraints:
        run=single_runs("learnable"),
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        runs=lambda wildcards: run_params([f"learnable/{wildcards.run}"]),
        command=lambda wildcards, input, output: train_job(input[0], output.notebook, [f"learnable/{wildcards.run}"]),
    conda:
        ENV
    shell:
        "{params.command} > {log:q} 2>&1"


for stack, run_ids in PLAN.stacks.items():  # one rule per stack: its runs' result.json are its outputs

    rule:
        name:
            stack_rule_name(stack)
        input:
            NOTEBOOK[PLAN.runs[run_ids[0]].experiment],
            selection_inputs(run_ids),
        output:
            done=f"{R}/stacks/{stack}.json",
            notebook=f"{R}/notebooks/stacks/{stack}.ipynb",
            results=[result_json(r) for r in run_ids],
        log:
            f"{R}/logs/stacks/{stack}.log",
        threads: THREADS
        resources:
            gpu=GPU,
        params:
            runs=run_params(run_ids),
            command=stack_command(stack),
        conda:
            ENV
        shell:
            "{params.command} > {log:q} 2>&1"


rule select:
    input:
        lambda wildcards: [result_json(r) for r in PLAN.selections[wildcards.sel]],
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
        "{params.py} -m silentvae.pipeline select {output:q} {params.candidates:q} > {log:q} 2>&1"


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
        settings=lambda wildcards: PLAN.variance[f"variance/{wildcards.job}"],
        command=lambda wildcards, input, output: papermill(
            input[0], output.notebook, settings=PLAN.variance[f"variance/{wildcards.job}"],
            selection_path=input[1], runs_dir=f"{R}/runs", out_json=output.result,
            device=config["device"], threads=THREADS),
    conda:
        ENV
    shell:
        "{params.command} > {log:q} 2>&1"


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
        settings=lambda wildcards: PLAN.taylor[f"taylor/{wildcards.dataset}"],
        command=lambda wildcards, input, output: papermill(
            input[0], output.notebook, settings=PLAN.taylor[f"taylor/{wildcards.dataset}"],
            out_json=output.result, work_dir=f"{R}/taylor/{wildcards.dataset}",
            device=config["device"], threads=THREADS),
    conda:
        ENV
    shell:
        "{params.command} > {log:q} 2>&1"


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
        config=config,
        command=lambda wildcards, input, output: papermill(
            input[0], output.notebook, results_dir=R, output_dir=R, config=config, not_run=PLAN.not_run),
        py=PY,
    conda:
        ENV
    shell:
        "({params.command} && {params.py} -m nbconvert --to html --no-input {output.notebook:q} --output report.html) > {log:q} 2>&1"
