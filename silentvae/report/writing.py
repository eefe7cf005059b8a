r"""Report assembly: build the evidence of a results folder once (:func:`silentvae.report.evidence.build_evidence`),
judge the claims on it, render every table and figure from it, and write them (``tables/<name>.{csv,md,tex}``, ``figures/<name>.{png,pdf}``). The tables themselves are
:mod:`silentvae.report.tables`, the verdicts :mod:`silentvae.report.claims`, the figures :mod:`silentvae.report.plots`.

:func:`write_report` returns {"claims": DataFrame, "sections": [{"title", "caption", "table", "figures"}],
"tables", "figures", "notes", "provenance", "evidence", "comparisons"}; the report notebook (``tools/build_notebooks.py``) displays it.
Claims are looked up by id (:func:`silentvae.report.tables.verdict_by_id`), never by row position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import claims
from . import paper_values as pv
from ..pipeline import paths
from ..pipeline.plan import run_value_rule
from ..training.history import DEFAULT_RUN_VALUE
from ..training.methods import FIXED_METHODS, LEARNABLE_METHODS, label as method_label
from .evidence import Evidence, build_evidence
from .tables import (CAPTIONS, claims_details, claims_summary, convergence, provenance, summary_convergence,
                     learnable_seeds, summary_learnable, summary_table1, summary_table2, summary_taylor, table1, table2,
                     table3, table4, table9, taylor_table, verdict_by_id, write_table)

__all__ = ["write_report", "PAPER_FIGURE", "LEARNABLE_TITLES"]

PAPER_FIGURE = {"mnist": "figure3", "mnist5k": "figure3", "imagenet32": "figure4", "cifar10": "figure5"}
LEARNABLE_TITLES = {"table3": "Table 3: learnable variance, BPD", "table4": "Table 4: KLD", "table9": "Table 9: MSE"}


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


def _variance_section(evidence: Evidence, tables: dict, figures: dict) -> list[dict[str, Any]]:
    from . import plots
    if not evidence.variance:
        return []
    tables["table1"] = table1(evidence.variance)
    figures["variance"] = plots.variance_figure(tables["table1"])
    return [{"title": "Table 1: gradient variance", "caption": CAPTIONS["table1"],
             "table": summary_table1(evidence.variance), "figures": ["variance"]}]


def _fixed_sections(evidence: Evidence, cfg: dict[str, Any], verdicts: dict[str, str], images: _Images,
                    tables: dict, figures: dict) -> list[dict[str, Any]]:
    """Table 2 (mean ± sd over seeds), convergence (epochs to target per seed), learning curves, Figure 2."""
    from . import plots
    dataset, selections, fixed = evidence.fixed_dataset, evidence.fixed_selections, evidence.fixed
    methods = [m for m in FIXED_METHODS if m in selections or (m in fixed and fixed[m].runs)]
    tables["table2"] = table2(fixed, selections, methods=methods, not_run=evidence.not_run, dataset=dataset)
    seeds = {m: ev for m, ev in fixed.items() if ev.runs}
    if not seeds:
        return []
    tables["convergence"] = convergence(seeds, evidence.target_bpd)
    figures["fixed_curves"] = plots.curves_panels(
        {f"{ev.label} (seed {ev.runs[0].seed}; {ev.seeds_found})": ev.runs[0].result()["history"]
         for ev in seeds.values()}, target=evidence.target_bpd,
        title=f"Learning curves of the Table 2 runs ({dataset}, first seed of each)")
    first = images.validation(next(iter(seeds.values())).runs[0].result())
    rows = {"original": first}
    for m, ev in seeds.items():   # its first shown run: the selected one, or (no selection yet) a finished seed
        rows[FIXED_METHODS[m].label] = images.reconstructions(ev.run_ids[0], first)[0]
    figures["figure2_fixed_reconstructions"] = plots.reconstruction_figure(rows, f"Figure 2 ({dataset})")
    return [{"title": "Table 2: fixed variance", "caption": CAPTIONS["table2"],
             "table": summary_table2(tables["table2"], verdicts, fixed, methods),
             "figures": ["fixed_curves", "figure2_fixed_reconstructions"]},
            {"title": "Convergence (Sec. 3.2)", "caption": CAPTIONS["convergence"],
             "table": summary_convergence(tables["convergence"], verdicts[claims.claim_id("convergence")]),
             "figures": []}]


def _learnable_sections(evidence: Evidence, datasets: list[str], images: _Images, tables: dict,
                        figures: dict, evidence_rule: str = DEFAULT_RUN_VALUE) -> list[dict[str, Any]]:
    """Tables 3, 4, 9 (compact; Tables 3 and 4 with each pair's verdict), then per dataset its curves and
    reconstructions. ``evidence_rule``: how the runs were read (``learnable_variance.run_value``)."""
    from . import plots
    not_run, sections = evidence.not_run, []
    tables["learnable_seeds"] = learnable_seeds(evidence.learnable, datasets)
    if not tables["learnable_seeds"].empty:
        sections.append({"title": "Learnable variance: every method over its seeds", "table": tables["learnable_seeds"],
                         "caption": CAPTIONS["learnable_seeds"], "figures": []})
    for name, table in (("table3", table3), ("table4", table4), ("table9", table9)):
        tables[name] = table(evidence.learnable, not_run, datasets)
        summary = summary_learnable(name, evidence.learnable, datasets, not_run)
        if not summary.empty:
            caption = CAPTIONS[name]
            if evidence_rule == "best_epoch":
                caption += f" Here {claims.BEST_EPOCH_NOTE}, not the mean of the last epochs."
            sections.append({"title": LEARNABLE_TITLES[name], "caption": caption, "table": summary, "figures": []})
    for dataset in datasets:
        learnable = {m: ev for m, ev in evidence.learnable.get(dataset, {}).items() if ev.runs}
        if not learnable:
            continue
        curves = f"learnable_curves_{dataset}"
        panels: dict[str, dict[str, list]] = {}
        colors, dashed = {}, set()          # one colour per estimator in both panels; its "+ SG" dashed
        estimator_colors = plots.palette_for(list(dict.fromkeys(m.estimator for m in LEARNABLE_METHODS.values())))
        for m, ev in learnable.items():
            method = LEARNABLE_METHODS[m]
            curve = f"{method_label('learnable', m)} ({len(ev.runs)} seeds)"
            panels.setdefault(f"{method.latent.capitalize()} latents", {})[curve] = [list(r.history) for r in ev.runs]
            colors[curve] = estimator_colors[method.estimator]
            if method.baseline is not None:
                dashed.add(curve)
        figures[curves] = plots.seed_band_figure(
            panels, title=f"Learnable variance, {dataset}: mean and sd over seeds", colors=colors, dashed=dashed)
        first = images.validation(next(iter(learnable.values())).runs[0].result())
        by_method = {method_label("learnable", m): images.reconstructions(ev.run_ids[0], first)
                     for m, ev in learnable.items()}
        name = f"{PAPER_FIGURE.get(dataset, 'figure')}_{dataset}_reconstructions"
        figures[name] = plots.reconstruction_with_std_figure(first, by_method,
                                                             title=f"{dataset}: means and learned std")
        caption = ("Curves: mean and one sd over each method's seeds, per epoch. Reconstructions: the first "
                   "validation images through each method's first run (" + ", ".join(
                       ev.run_ids[0] for ev in learnable.values()) + "), one latent sample per image, decoder mean "
                   "and std from the run's last checkpoint (its last epoch, whichever epoch the tables read).")
        sections.append({"title": f"Learnable variance on {dataset}: curves and Figure {name[6]}-style "
                                  f"reconstructions", "caption": caption, "table": None, "figures": [curves, name]})
    return sections


def _taylor_section(evidence: Evidence, verdicts: dict[str, str], tables: dict,
                    figures: dict) -> list[dict[str, Any]]:
    from . import plots
    if evidence.taylor is None:
        return []
    tables["taylor_bias"] = taylor_table(evidence.taylor)
    figures["taylor_bias"] = plots.taylor_figure((evidence.taylor.get("draws") or [evidence.taylor])[0])
    return [{"title": "Taylor bias (Sec. 4.1)", "caption": CAPTIONS["taylor_bias"],
             "table": summary_taylor(tables["taylor_bias"], verdicts[claims.claim_id("taylor")]),
             "figures": ["taylor_bias"]}]


def write_report(results_dir: str | Path, cfg: dict[str, Any], *, out_dir: str | Path | None = None,
                 num_images: int = 8, device: str = "cpu") -> dict[str, Any]:
    """Every claim, table and figure of the paper from the finished outputs under ``results_dir``, checked against
    the plan of ``cfg`` (a claim whose planned seeds are not all on disk is "not run: seeds ... missing").

    Writes ``tables/<name>.{csv,md,tex}`` (``claims`` first: :func:`silentvae.report.claims.claims_table`; the long
    comparisons ``table1`` ... ``taylor_bias``; ``provenance``: every run shown) and
    ``figures/<name>.{png,pdf}`` under ``out_dir`` (default ``results_dir``). Returns {"claims": DataFrame,
    "sections": [{"title", "caption", "table": compact DataFrame, "figures": [names]}], "tables": {name:
    DataFrame}, "figures": {name: Figure}, "notes": [one line per missing dataset], "provenance": DataFrame,
    "evidence": the :class:`silentvae.report.evidence.Evidence` everything was built from, "comparisons": the
    claims table's count of tests and the false verdicts it implies}.
    """
    from . import plots
    results = str(results_dir)
    evidence = build_evidence(results, cfg)
    claims_df = claims.claims_table(evidence, cfg)
    verdicts = verdict_by_id(claims_df)
    tables: dict[str, Any] = {"claims": claims_df}
    figures: dict[str, Any] = {}
    images = _Images(results, device, num_images)
    datasets = list(cfg["learnable_variance"]["datasets"]) if cfg["learnable_variance"]["enabled"] else []
    sections = (_variance_section(evidence, tables, figures)
                + _fixed_sections(evidence, cfg, verdicts, images, tables, figures)
                + _learnable_sections(evidence, datasets, images, tables, figures,
                                      run_value_rule(cfg, "learnable"))
                + _taylor_section(evidence, verdicts, tables, figures))
    tables["provenance"] = provenance(evidence.shown_runs(datasets))
    dest = out_dir if out_dir is not None else results
    for name, df in tables.items():
        write_table(df, paths.tables_dir(dest), name)
    for name, fig in figures.items():
        plots.save_figure(fig, Path(paths.figures_dir(dest)) / name)
    notes = [f"{reason}: every claim and table cell of {pv.DATASET_LABELS.get(ds, ds)} is \"not run\"."
             for ds, reason in evidence.not_run.items()]
    return {"claims": claims_df, "claims_summary": claims_summary(claims_df), "claims_details": claims_details(claims_df),
            "comparisons": claims.comparisons_note(claims_df), "sections": sections, "tables": tables,
            "figures": figures, "notes": notes, "provenance": tables["provenance"], "evidence": evidence}
