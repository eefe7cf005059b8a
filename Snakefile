# silentvae: reproduce "Zero-Variance Gradients for Variational Autoencoders" (arXiv 2508.03587).
#
#   snakemake --cores 8 --resources gpu=8            # paper protocol (config/paper.yaml), up to 8 GPUs
#   snakemake --profile profiles/embedded            # offline reduced run on 2 CPU cores (config/embedded.yaml)
#
# Table of contents (each training/diagnostic job executes one papermill notebook from notebooks/):
#   train_fixed      fixed-variance linear decoder runs       -> Table 2, Figure 2, convergence (Sec. 3.2)
#                    (train_fixed_stack with engine: stacked -- a method's learning-rate grid in one job)
#   train_learnable  learnable-variance runs, with/without SG -> Tables 3, 4, 9, Figures 3-5 (Sec. 4.2)
#   select           best grid point on validation BPD        -> results/selected/
#   variance         gradient-variance decomposition          -> Table 1
#   taylor           Taylor-bias check vs enumeration         -> Sec. 4.1
#   report           tables, figures, report.html             -> results/tables, results/figures
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from silentvae.pipeline import lr_tag, make_plan

if not workflow.overwrite_configfiles:  # no --configfile: the paper protocol (--configfile replaces it, not merges)
    configfile: "config/paper.yaml"
validate(config, "config/schema.yaml")

ENV = "environment.yml"  # each rule's conda env (with --use-conda); otherwise jobs use snakemake's environment

R = config["results"]
PLAN = make_plan({**config, "data_root": str(Path(config["data_root"]).resolve())})
GPU = 1 if config.get("device", "auto") == "auto" else 0
THREADS = config.get("threads_per_job", 1)
PY = shlex.quote(sys.executable)            # the environment snakemake runs in (.venv)
ON_DEVICE = f"{PY} -m silentvae.gpus --"    # claims a free GPU (or none: CPU) for the job's lifetime


def papermill(notebook, out_nb, **params):
    """Shell command executing a notebook with papermill on a claimed device."""
    return (f"{ON_DEVICE} {PY} -m papermill --cwd {shlex.quote(workflow.basedir)} --log-output --no-progress-bar "
            f"{notebook} {out_nb} -y {shlex.quote(json.dumps(params))}")


def learnable_job(wildcards, output):
    spec = PLAN.runs[f"learnable/{wildcards.run}"]
    return papermill("notebooks/learnable_variance.ipynb", output.notebook, run_id=spec.id,
                     run_config=spec.config, inherit=spec.inherit, selections_dir=f"{R}/selected",
                     out_dir=str(Path(output.result).parent), device=config["device"], threads=THREADS)


def fixed_job(notebook, specs):
    """One fixed-variance job: a single run, or a whole learning-rate grid trained stacked."""
    runs = [{"id": s.id, "config": s.config, "inherit": s.inherit, "out_dir": f"{R}/runs/{s.id}"} for s in specs]
    return papermill("notebooks/fixed_variance.ipynb", notebook, runs=runs, selections_dir=f"{R}/selected",
                     device=config["device"], threads=THREADS)


def selection_inputs(kind):
    return lambda wildcards: [f"{R}/selected/{sel}.json" for sel in PLAN.runs[f"{kind}/{wildcards.run}"].selections]


def selection_json(sel):
    return f"{R}/selected/{sel}.json"


def result_json(run_id):
    return f"{R}/runs/{run_id}/result.json"


REPORT_INPUTS = ([selection_json(s) for s in PLAN.selections]
                 + [result_json(r) for runs in PLAN.final_runs.values() for r in runs]
                 + [f"{R}/{job}.json" for job in PLAN.variance]
                 + [f"{R}/{job}.json" for job in PLAN.taylor])


rule all:
    input:
        f"{R}/report.html",


if PLAN.stacks:  # fixed_variance.engine: stacked -- one job trains a method's learning-rate grid at once

    rule train_fixed_stack:
        input:
            "notebooks/fixed_variance.ipynb",
        output:
            results=expand(f"{R}/runs/fixed/{{{{stack}}}}/{{tag}}/result.json",
                           tag=[lr_tag(lr) for lr in config["fixed_variance"]["lr_grid"]]),
            notebook=f"{R}/notebooks/runs/fixed/{{stack}}/stack.ipynb",
        log:
            f"{R}/logs/fixed/{{stack}}/stack.log",
        threads: THREADS
        resources:
            gpu=GPU,
        params:
            command=lambda wildcards, output: fixed_job(
                output.notebook, [PLAN.runs[r] for r in PLAN.stacks[f"fixed/{wildcards.stack}"]]),
        conda:
            ENV
        shell:
            "{params.command} > {log} 2>&1"

else:

    rule train_fixed:
        input:
            "notebooks/fixed_variance.ipynb",
            selection_inputs("fixed"),
        output:
            result=f"{R}/runs/fixed/{{run}}/result.json",
            notebook=f"{R}/notebooks/runs/fixed/{{run}}.ipynb",
        log:
            f"{R}/logs/fixed/{{run}}.log",
        threads: THREADS
        resources:
            gpu=GPU,
        params:
            command=lambda wildcards, output: fixed_job(output.notebook, [PLAN.runs[f"fixed/{wildcards.run}"]]),
        conda:
            ENV
        shell:
            "{params.command} > {log} 2>&1"


rule train_learnable:
    input:
        "notebooks/learnable_variance.ipynb",
        selection_inputs("learnable"),
    output:
        result=f"{R}/runs/learnable/{{run}}/result.json",
        notebook=f"{R}/notebooks/runs/learnable/{{run}}.ipynb",
    log:
        f"{R}/logs/learnable/{{run}}.log",
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        command=learnable_job,
    conda:
        ENV
    shell:
        "{params.command} > {log} 2>&1"


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
