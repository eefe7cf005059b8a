r"""Report assembly: gather a results folder's finished outputs, judge the claims, build every table and figure,
and write them (``tables/<name>.{csv,md,tex}``, ``figures/<name>.{png,pdf}``). The tables themselves are
:mod:`silentvae.report.tables`, the verdicts :mod:`silentvae.report.claims`, the figures :mod:`silentvae.report.plots`.

:func:`write_report` returns {"claims": DataFrame, "sections": [{"title", "caption", "table", "figures"}],
"tables", "figures", "notes", "provenance"}; the report notebook (``tools/build_notebooks.py``) displays it.
Claims are looked up by id (:func:`silentvae.report.tables.verdict_by_id`), never by row position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import claims
from . import paper_values as pv
from ..pipeline import paths
from ..training.methods import FIXED_METHODS, label as method_label
from .tables import (CAPTIONS, convergence, load_json, provenance, summary_convergence, summary_learnable,
                     summary_table1, summary_table2, summary_taylor, table1, table2, table3, table4, table9,
                     taylor_table, verdict_by_id, write_table)

__all__ = ["gather_results", "write_report", "PAPER_FIGURE", "LEARNABLE_TITLES"]

PAPER_FIGURE = {"mnist": "figure3", "mnist5k": "figure3", "imagenet32": "figure4", "cifar10": "figure5"}
LEARNABLE_TITLES = {"table3": "Table 3: learnable variance, BPD", "table4": "Table 4: KLD", "table9": "Table 9: MSE"}


def _load_if_present(path: str) -> dict[str, Any] | None:
    return load_json(path) if Path(path).exists() else None


def gather_results(results_dir: str | Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Collect every finished output of the plan of ``cfg`` under ``results_dir`` for the report.

    Returns a dict with ``fixed_dataset``, ``fixed_selections`` {method: selection}, ``fixed_results``
    {run id: result}, ``fixed_runs`` {method: run ids of the selected learning rate's seeds, the selected grid
    run first}, ``variance`` {method: {epoch: result}}, ``learnable`` {dataset: {method: [results over seeds,
    the selected grid run first]}}, ``learnable_runs`` (the same with run ids), ``learnable_selections``
    {dataset: {method: selection}}, ``taylor`` (result or None) and ``not_run`` {dataset: reason}. Outputs
    that do not exist are left out.
    """
    from ..pipeline.plan import make_plan
    results = str(results_dir)
    plan = make_plan(cfg)
    out: dict[str, Any] = {"fixed_dataset": cfg["fixed_variance"]["dataset"], "fixed_selections": {},
                           "fixed_results": {}, "fixed_runs": {}, "variance": {}, "learnable": {},
                           "learnable_runs": {}, "learnable_selections": {}, "taylor": None,
                           "not_run": dict(plan.not_run)}
    for selection_id, run_ids in plan.selections.items():
        selection = _load_if_present(paths.selection_json(results, selection_id))
        experiment, dataset, method = selection_id.split("/")
        finals = plan.final_runs.get(selection_id, [])
        if experiment == "fixed":
            for run_id in run_ids + finals:
                result = _load_if_present(paths.result_json(results, run_id))
                if result is not None:
                    out["fixed_results"][run_id] = result
            if selection is not None:
                out["fixed_selections"][method] = selection
                out["fixed_runs"][method] = [r for r in [selection["best_run"]] + finals if r in out["fixed_results"]]
        elif selection is not None:
            out["learnable_selections"].setdefault(dataset, {})[method] = selection
            found = [(run_id, _load_if_present(paths.result_json(results, run_id)))
                     for run_id in [selection["best_run"]] + finals]
            found = [(run_id, r) for run_id, r in found if r is not None]
            out["learnable"].setdefault(dataset, {})[method] = [r for _, r in found]
            out["learnable_runs"].setdefault(dataset, {})[method] = [run_id for run_id, _ in found]
    for job, settings in plan.variance.items():
        result = _load_if_present(paths.diagnostic_json(results, job))
        if result is not None:
            out["variance"][settings["method"]] = {int(e): r for e, r in result["results"].items()}
    for job in plan.taylor:
        out["taylor"] = _load_if_present(paths.diagnostic_json(results, job))
    return out


class _Images:
    """Validation images and checkpoint reconstructions for the figures."""

    def __init__(self, results: str, device: str, num_images: int) -> None:
        self.results, self.device, self.num_images = results, device, num_images

    def validation(self, result: dict[str, Any]):
        from ..training.run import RunConfig, load_splits
        run_cfg = RunConfig.from_dict({**result["config"], "device": self.device})
        return load_splits(run_cfg)[1].images[:self.num_images]

    def reconstructions(self, run_id: str, images):
        from . import plots
        return plots.reconstructions_from_checkpoint(paths.last_checkpoint(self.results, run_id), images, self.device)


def _variance_section(gathered: dict[str, Any], tables: dict, figures: dict) -> list[dict[str, Any]]:
    from . import plots
    if not gathered["variance"]:
        return []
    tables["table1"] = table1(gathered["variance"])
    figures["variance"] = plots.variance_figure(tables["table1"])
    return [{"title": "Table 1: gradient variance", "caption": CAPTIONS["table1"],
             "table": summary_table1(gathered["variance"]), "figures": ["variance"]}]


def _fixed_sections(gathered: dict[str, Any], cfg: dict[str, Any], verdicts: dict[str, str], images: _Images,
                    tables: dict, figures: dict) -> list[dict[str, Any]]:
    """Table 2 (mean ± sd over seeds), convergence (the seeds' mean curves), learning curves, Figure 2."""
    from . import plots
    dataset, selections = gathered["fixed_dataset"], gathered["fixed_selections"]
    seeds = {m: [gathered["fixed_results"][r] for r in ids] for m, ids in gathered["fixed_runs"].items() if ids}
    tables["table2"] = table2(selections, gathered["fixed_results"], not_run=gathered["not_run"], dataset=dataset,
                              seeds=gathered["fixed_runs"])
    if not seeds:
        return []
    target = cfg["fixed_variance"].get("target_bpd", pv.CONVERGENCE["target_bpd"])
    tables["convergence"] = convergence(seeds, target)
    figures["fixed_curves"] = plots.curves_panels({FIXED_METHODS[m].label: runs[0]["history"]
                                                   for m, runs in seeds.items()}, target=target,
                                                  title=f"Learning curves of the Table 2 runs ({dataset}, first seed)")
    first = images.validation(next(iter(seeds.values()))[0])
    rows = {"original": first}
    for m in seeds:
        rows[FIXED_METHODS[m].label] = images.reconstructions(selections[m]["best_run"], first)[0]
    figures["figure2_fixed_reconstructions"] = plots.reconstruction_figure(rows, f"Figure 2 ({dataset})")
    return [{"title": "Table 2: fixed variance", "caption": CAPTIONS["table2"],
             "table": summary_table2(tables["table2"], verdicts, gathered["fixed_runs"]),
             "figures": ["fixed_curves", "figure2_fixed_reconstructions"]},
            {"title": "Convergence (Sec. 3.2)", "caption": CAPTIONS["convergence"],
             "table": summary_convergence(tables["convergence"], verdicts[claims.claim_id("convergence")]),
             "figures": []}]


def _learnable_sections(gathered: dict[str, Any], datasets: list[str], images: _Images, tables: dict,
                        figures: dict) -> list[dict[str, Any]]:
    """Tables 3, 4, 9 (compact, with each pair's verdict), then per dataset its curves and reconstructions."""
    from . import plots
    not_run, sections = gathered["not_run"], []
    for name, table in (("table3", table3), ("table4", table4), ("table9", table9)):
        tables[name] = table(gathered["learnable"], not_run, datasets)
        summary = summary_learnable(name, gathered["learnable"], datasets, not_run)
        if not summary.empty:
            sections.append({"title": LEARNABLE_TITLES[name], "caption": CAPTIONS[name], "table": summary,
                             "figures": []})
    for dataset in datasets:
        selections = gathered["learnable_selections"].get(dataset, {})
        if not selections:
            continue
        learnable = gathered["learnable"][dataset]
        curves = f"learnable_curves_{dataset}"
        figures[curves] = plots.curves_panels(
            {method_label("learnable", m): runs[0]["history"] for m, runs in learnable.items() if runs},
            keys=("val_bpd", "val_kld"), title=f"Learnable variance, {dataset}: first seed of each method")
        first = images.validation(learnable[next(iter(selections))][0])
        by_method = {method_label("learnable", m): images.reconstructions(s["best_run"], first)
                     for m, s in selections.items()}
        name = f"{PAPER_FIGURE.get(dataset, 'figure')}_{dataset}_reconstructions"
        figures[name] = plots.reconstruction_with_std_figure(first, by_method,
                                                             title=f"{dataset}: means and learned std")
        sections.append({"title": f"Learnable variance on {dataset}: curves and Figure {name[6]}-style "
                                  f"reconstructions", "caption": "", "table": None, "figures": [curves, name]})
    return sections


def _taylor_section(gathered: dict[str, Any], verdicts: dict[str, str], tables: dict,
                    figures: dict) -> list[dict[str, Any]]:
    from . import plots
    if gathered["taylor"] is None:
        return []
    tables["taylor_bias"] = taylor_table(gathered["taylor"])
    figures["taylor_bias"] = plots.taylor_figure(gathered["taylor"])
    return [{"title": "Taylor bias (Sec. 4.1)", "caption": CAPTIONS["taylor_bias"],
             "table": summary_taylor(tables["taylor_bias"], verdicts[claims.claim_id("taylor")]),
             "figures": ["taylor_bias"]}]


def _shown_runs(gathered: dict[str, Any], datasets: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(run id, result) of every run whose numbers the report shows, for the provenance table."""
    shown = [(r, gathered["fixed_results"][r]) for ids in gathered["fixed_runs"].values() for r in ids]
    for dataset in datasets:
        for m in gathered["learnable_selections"].get(dataset, {}):
            shown += list(zip(gathered["learnable_runs"][dataset][m], gathered["learnable"][dataset][m]))
    return shown


def write_report(results_dir: str | Path, cfg: dict[str, Any], *, out_dir: str | Path | None = None,
                 num_images: int = 8, device: str = "cpu") -> dict[str, Any]:
    """Every claim, table and figure of the paper from the finished outputs under ``results_dir``.

    Writes ``tables/<name>.{csv,md,tex}`` (``claims`` first: :func:`silentvae.report.claims.claims_table`; the long
    comparisons ``table1`` ... ``taylor_bias``; ``provenance``: every run shown) and
    ``figures/<name>.{png,pdf}`` under ``out_dir`` (default ``results_dir``). Returns {"claims": DataFrame,
    "sections": [{"title", "caption", "table": compact DataFrame, "figures": [names]}], "tables": {name:
    DataFrame}, "figures": {name: Figure}, "notes": [one line per missing dataset], "provenance": DataFrame}.
    """
    from . import plots
    results = str(results_dir)
    gathered = gather_results(results, cfg)
    claims_df = claims.claims_table(gathered, cfg)
    verdicts = verdict_by_id(claims_df)
    tables: dict[str, Any] = {"claims": claims_df}
    figures: dict[str, Any] = {}
    images = _Images(results, device, num_images)
    datasets = list(cfg["learnable_variance"]["datasets"]) if cfg["learnable_variance"]["enabled"] else []
    sections = (_variance_section(gathered, tables, figures)
                + _fixed_sections(gathered, cfg, verdicts, images, tables, figures)
                + _learnable_sections(gathered, datasets, images, tables, figures)
                + _taylor_section(gathered, verdicts, tables, figures))
    tables["provenance"] = provenance(_shown_runs(gathered, datasets))
    dest = out_dir if out_dir is not None else results
    for name, df in tables.items():
        write_table(df, paths.tables_dir(dest), name)
    for name, fig in figures.items():
        plots.save_figure(fig, Path(paths.figures_dir(dest)) / name)
    notes = [f"{reason}: every claim and table cell of {pv.DATASET_LABELS.get(ds, ds)} is \"not run\"."
             for ds, reason in gathered["not_run"].items()]
    return {"claims": claims_df, "sections": sections, "tables": tables, "figures": figures, "notes": notes,
            "provenance": tables["provenance"]}
