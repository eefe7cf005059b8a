# silentvae: reproduce "Zero-Variance Gradients for Variational Autoencoders" (arXiv 2508.03587).
#
#   snakemake --cores 8 --resources gpu=8            # paper protocol (config/paper.yaml), up to 8 GPUs
#   snakemake --cores 4 --resources gpu=4 --config jobs_per_gpu=4   # the same on one GPU, 4 jobs sharing it
#   snakemake --profile profiles/embedded            # offline reduced run on 2 CPU cores (config/embedded.yaml)
#
# Table of contents (each training/diagnostic job executes one papermill notebook from notebooks/; the plan is
# silentvae.pipeline.plan's, every path silentvae.pipeline.paths'):
#   train_<job>  a training job: one run, or a method's grid stacked (stack_grid: true); its experiment's
#                notebook: fixed variance -> Table 2, Figure 2, convergence (Sec. 3.2);
#                learnable variance, with/without SG -> Tables 3, 4, 9, Figures 3-5 (Sec. 4.2)
#   select       best grid point on validation BPD        -> results/selected/
#   variance     gradient-variance decomposition          -> Table 1
#   taylor       Taylor-bias check vs enumeration         -> Sec. 4.1
#   report       tables, figures, report.html             -> results/tables, results/figures
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml

from silentvae.pipeline import paths
from silentvae.pipeline.plan import flag_changed_runs, make_plan, resolve_config, run_value_rule

if not workflow.overwrite_configfiles:  # no --configfile: the paper protocol (a --configfile replaces it)
    configfile: "config/paper.yaml"
RESOLVED = resolve_config(config)  # a config that `extends: paper.yaml` is merged onto it; validated (schema)
config.clear()
config.update(RESOLVED)
paths.check_results_dir(config["results"], os.getcwd())  # not empty, not "/", not another working directory's


onstart:
    paths.check_results_dir(config["results"], os.getcwd(), claim=True)


ENV = "environment.yml"  # each rule's conda env (with --use-conda); otherwise jobs use snakemake's environment
NOTEBOOK = {"fixed": "notebooks/fixed_variance.ipynb", "learnable": "notebooks/learnable_variance.ipynb",
            "variance": "notebooks/variance_decomposition.ipynb", "taylor": "notebooks/taylor_bias.ipynb",
            "report": "notebooks/report.ipynb"}

R = config["results"]
PLAN = make_plan({**config, "data_root": str(Path(config["data_root"]).resolve())})
CHANGED = flag_changed_runs(PLAN, R)  # {run id: planned.json}, newer than result.json where the run's config changed
DEVICE = config.get("device", "auto")
GPU = 1 if DEVICE == "auto" else 0
THREADS = config.get("threads_per_job", 1)
PY = shlex.quote(sys.executable)            # the environment snakemake runs in (.venv)
JOBS_PER_GPU = config.get("jobs_per_gpu", 1)
ON_DEVICE = f"{PY} -m silentvae.pipeline.gpus --jobs-per-gpu {JOBS_PER_GPU} --"  # claims a GPU (or none: CPU) for the job


def papermill(notebook, out_nb, **params):
    """Shell command executing a notebook with papermill on a claimed device. Papermill reads -y with PyYAML's
    safe loader, so the parameters are written by PyYAML's safe dumper: every value comes back with its type
    (JSON text would not: YAML 1.1 reads 1e-05 as a string)."""
    text = yaml.safe_dump(params, default_flow_style=True, width=float("inf")).strip()
    return (f"{ON_DEVICE} {PY} -m papermill --cwd {shlex.quote(workflow.basedir)} --log-output --no-progress-bar "
            f"{shlex.quote(notebook)} {shlex.quote(out_nb)} -y {shlex.quote(text)}")


def run_params(run_ids):
    """What fixes the runs of a job (a rule param: Snakemake reruns the job when it changes)."""
    return [{"id": r, "config": PLAN.runs[r].config, "inherit": PLAN.runs[r].inherit} for r in run_ids]


def training_command(job):
    runs = [{**run, "out_dir": paths.run_dir(R, run["id"])} for run in run_params(PLAN.training_jobs[job])]
    return lambda wildcards, input, output: papermill(
        input.notebook, output.notebook, runs=runs, selections_dir=paths.selections_dir(R), device=DEVICE,
        threads=THREADS, stack_size=config.get("stack_size", "auto"), done_json=output.done,
        jobs_per_gpu=JOBS_PER_GPU, compile=config.get("compile", False))


def selection_inputs(run_ids):
    """The selections whose best values the runs inherit (a method with SG takes its baseline's learning rate)."""
    return sorted({paths.selection_json(R, s) for r in run_ids for s in PLAN.runs[r].selections})


def one_of(ids):
    """Wildcard constraint matching exactly ``ids``."""
    return "|".join(re.escape(i) for i in ids) or "(?!)"  # (?!) matches nothing


REPORT_INPUTS = ([paths.selection_json(R, s) for s in PLAN.selections]
                 + [paths.result_json(R, r) for r in PLAN.runs]
                 + [paths.diagnostic_json(R, job) for job in [*PLAN.variance, *PLAN.taylor]])


rule all:  # the results as targets too: Snakemake redoes a deleted one (and the report) even when report.html is newer
    input:
        paths.report_html(R),
        REPORT_INPUTS,


for job, run_ids in PLAN.training_jobs.items():  # the training rule, once per job (its runs are its outputs)

    rule:
        name:
            f"train_{re.sub(r'[^A-Za-z0-9]', '_', job)}"
        input:
            notebook=NOTEBOOK[PLAN.runs[run_ids[0]].experiment],
            selections=selection_inputs(run_ids),
            changed=[CHANGED[r] for r in run_ids if r in CHANGED],  # newer than result.json: the job runs again
        output:
            done=paths.training_json(R, job),
            notebook=paths.training_notebook(R, job),
            results=[paths.result_json(R, r) for r in run_ids],
        log:
            paths.training_log(R, job),
        threads: THREADS
        resources:
            gpu=GPU,
        params:
            runs=run_params(run_ids),
            command=training_command(job),
        conda:
            ENV
        shell:
            "{params.command} > {log:q} 2>&1"


rule select:
    input:
        lambda wildcards: [paths.result_json(R, r) for r in PLAN.selections[wildcards.sel]],
    output:
        paths.selection_json(R, "{sel}"),
    log:
        paths.job_log(R, "selected/{sel}"),
    wildcard_constraints:
        sel=one_of(PLAN.selections),
    params:
        candidates=lambda wildcards: json.dumps({r: paths.result_json(R, r) for r in PLAN.selections[wildcards.sel]}),
        run_value=lambda wildcards: run_value_rule(config, wildcards.sel.split("/")[0]),
        py=PY,
    conda:
        ENV
    shell:
        "{params.py} -m silentvae.pipeline.plan select {output:q} {params.candidates:q} "
        "--run-value {params.run_value} > {log:q} 2>&1"


rule variance:
    input:
        notebook=NOTEBOOK["variance"],
        selection=lambda wildcards: paths.selection_json(R, PLAN.variance[wildcards.job]["selection"]),
        seeds=lambda wildcards: [paths.result_json(R, r) for r in PLAN.variance[wildcards.job]["seed_runs"]],
    output:
        result=paths.diagnostic_json(R, "{job}"),
        notebook=paths.job_notebook(R, "{job}"),
    log:
        paths.job_log(R, "{job}"),
    wildcard_constraints:
        job=one_of(PLAN.variance),
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        settings=lambda wildcards: PLAN.variance[wildcards.job],
        command=lambda wildcards, input, output: papermill(
            input.notebook, output.notebook, settings=PLAN.variance[wildcards.job], selection_path=input.selection,
            runs_dir=paths.runs_dir(R), out_json=output.result, device=DEVICE, threads=THREADS),
    conda:
        ENV
    shell:
        "{params.command} > {log:q} 2>&1"


rule taylor:
    input:
        notebook=NOTEBOOK["taylor"],
    output:
        result=paths.diagnostic_json(R, "{job}"),
        notebook=paths.job_notebook(R, "{job}"),
    log:
        paths.job_log(R, "{job}"),
    wildcard_constraints:
        job=one_of(PLAN.taylor),
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        settings=lambda wildcards: PLAN.taylor[wildcards.job],
        command=lambda wildcards, input, output: papermill(
            input.notebook, output.notebook, settings=PLAN.taylor[wildcards.job], out_json=output.result,
            work_dir=paths.diagnostic_work_dir(R, wildcards.job), device=DEVICE, threads=THREADS),
    conda:
        ENV
    shell:
        "{params.command} > {log:q} 2>&1"


rule report:
    input:
        notebook=NOTEBOOK["report"],
        results=REPORT_INPUTS,
    output:  # update: kept until a new report is complete (Snakemake restores them if the report job fails)
        notebook=update(paths.report_notebook(R)),
        html=update(paths.report_html(R)),
    log:
        paths.job_log(R, "report"),
    params:
        config=config,
        command=lambda wildcards, input, output: papermill(
            input.notebook, output.notebook, results_dir=R, output_dir=R, config=config),
        html_name=Path(paths.report_html(R)).name,  # nbconvert writes it beside the notebook
        py=PY,
    conda:
        ENV
    shell:
        "({params.command} && {params.py} -m nbconvert --to html --no-input {output.notebook:q} --output {params.html_name:q}) > {log:q} 2>&1"
