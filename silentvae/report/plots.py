r"""Figures of the report (matplotlib / seaborn); every function returns a :class:`matplotlib.figure.Figure`.

* :func:`reconstruction_figure`: Figure 2 style (originals, then reconstructed means per method).
* :func:`reconstruction_with_std_figure`: Figures 3-5 style (per method a row of means and a row of
  per-pixel standard deviations, each std image normalised to [0, 1]).
* :func:`reconstructions_from_checkpoint`: decoder means / stds of a trained run for given images.
* :func:`curves_figure`, :func:`variance_figure`, :func:`taylor_figure`: learning curves, Table 1 bars,
  Taylor-bias bars.

Figures are built with the object API (no pyplot state), so they work under any backend; call
:func:`save_figure` to write ``.png`` and ``.pdf`` atomically and ``plt.close(fig)`` is not needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import paper_values as pv
from ..training.io import atomic_path

__all__ = ["save_figure", "figure_png", "show", "curves_panels", "palette_for", "seed_band_figure", "image_grid", "normalise_per_image", "reconstruction_figure",
           "reconstruction_with_std_figure", "reconstructions_from_checkpoint", "curves_figure",
           "variance_figure", "taylor_figure"]


#: the axis label of each history key the curves draw
Y_LABELS = {"val_bpd": "validation BPD", "val_mse": "validation MSE", "val_kld": "validation KLD"}


def save_figure(fig: Figure, path_without_ext: str | Path, dpi: int = 150) -> dict[str, Path]:
    """Write ``<path>.png`` and ``<path>.pdf`` atomically; returns {"png": path, "pdf": path}."""
    base = Path(path_without_ext)
    paths = {ext: base.with_name(base.name + f".{ext}") for ext in ("png", "pdf")}
    for ext, path in paths.items():
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi)
    return paths


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def show(fig: Figure, dpi: int = 100) -> None:
    """Display the figure inline as a PNG image (an ``image/png`` output in a notebook, an ``<img>`` in its
    HTML export), whatever matplotlib backend the kernel has."""
    from IPython.display import Image, display
    display(Image(data=figure_png(fig, dpi), format="png"))


def image_grid(images: Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) images, clipped to [0, 1], tiled in one row (or ``nrow`` per row) -> (H', W', 3) array."""
    from torchvision.utils import make_grid
    images = images.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    grid = make_grid(images, nrow=nrow or images.shape[0], padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def normalise_per_image(x: Tensor) -> Tensor:
    """Min-max normalise every image of (N, C, H, W) to [0, 1] separately (a constant image -> 0)."""
    x = x.detach().to(torch.float32)
    flat = x.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def _image_rows_figure(rows: list[tuple[str, Tensor]], title: str | None, nrow: int | None = None) -> Figure:
    n_cols = max(r.shape[0] for _, r in rows) if nrow is None else nrow
    width = max(4.0, 0.9 * n_cols + 1.5)
    fig = Figure(figsize=(width, 1.25 * len(rows) + (0.5 if title else 0.1)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, images) in zip(axes, rows):
        ax.imshow(image_grid(images, nrow=nrow), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(label, loc="left", fontsize=9, pad=2)   # inside the layout, unlike a long y label
    if title:
        fig.suptitle(title)
    return fig


def reconstruction_figure(rows: dict[str, Tensor], title: str | None = None) -> Figure:
    """Figure 2: one image row per entry of ``rows`` (label -> (N, C, H, W)), in order; the first entry
    should be the originals, the others the reconstructed means of each method. Values clipped to [0, 1]."""
    if not rows:
        raise ValueError("reconstruction_figure needs at least one row")
    return _image_rows_figure(list(rows.items()), title)


def reconstruction_with_std_figure(originals: Tensor, methods: dict[str, tuple[Tensor, Tensor]],
                                   title: str | None = None, original_label: str = "Original") -> Figure:
    """Figures 3-5: originals, then for each method a row of reconstructed means (clipped to [0, 1]) and a
    row of per-pixel standard deviations normalised to [0, 1] per image."""
    rows: list[tuple[str, Tensor]] = [(original_label, originals)]
    for label, (means, stds) in methods.items():
        rows.append((f"{label}: mean", means))
        rows.append((f"{label}: std (normalised per image)", normalise_per_image(stds)))
    return _image_rows_figure(rows, title)


@torch.no_grad()
def reconstructions_from_checkpoint(path: str | Path, images: Tensor, device: str = "cpu",
                                    seed: int = 0) -> tuple[Tensor, Tensor]:
    """Decoder mean and std for ``images`` (N, C, H, W) with a trained run's checkpoint (``last.pt`` or
    ``epoch_XXXX.pt``).

    As in the paper's Appendix C, the images pass through the trained encoder to obtain a latent sample
    z ~ q(z|x) (drawn with a ``torch.Generator`` seeded ``seed``), which the evaluated decoder maps to a
    per-pixel mean and std: the :class:`~silentvae.models.LinearDecoder` in the fixed experiment (std =
    sqrt(sigma2) everywhere), the nonlinear decoder in the learnable one (the SG linear decoder is unused).
    Returns (means, stds), each (N, C, H, W) float32 on the CPU.
    """
    from ..training.run import load_run
    cfg, models, _ = load_run(path, device)
    x = images.to(device=device, dtype=cfg.torch_dtype)
    posterior = models["encoder"](x)
    gen = torch.Generator(device=device).manual_seed(seed)
    z = posterior.sample(gen)
    decoder = models["decoder"]
    means, stds = decoder.mean(z), decoder.std(z)
    return means.to("cpu", torch.float32), stds.to("cpu", torch.float32)


def curves_figure(histories: dict[str, list[dict[str, Any]]], key: str = "val_bpd", target: float | None = None,
                  title: str | None = None, ylabel: str | None = None) -> Figure:
    """Learning curves: ``history[key]`` against epoch for each label, with an optional dashed target line."""
    import seaborn as sns
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    palette = sns.color_palette("colorblind", max(1, len(histories)))
    for color, (label, history) in zip(palette, histories.items()):
        pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            ep, val = zip(*pts)
            ax.plot(ep, val, label=label, color=color, marker="o" if len(pts) < 30 else None, markersize=3)
    if target is not None:
        ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or Y_LABELS.get(key, key))
    ax.grid(True, alpha=0.3)
    if histories or target is not None:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def curves_panels(histories: dict[str, list[dict[str, Any]]], keys: tuple[str, ...] = ("val_bpd", "val_mse"),
                  target: float | None = None, title: str | None = None) -> Figure:
    """Learning curves side by side, one panel per history key (e.g. validation BPD and MSE) with one line
    per label; ``target`` is drawn as a dashed line in the ``val_bpd`` panel."""
    import seaborn as sns
    fig = Figure(figsize=(5.0 * len(keys), 3.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    palette = sns.color_palette("colorblind", max(1, len(histories)))
    for ax, key in zip(axes, keys):
        for color, (label, history) in zip(palette, histories.items()):
            pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), label=label, color=color)
        if target is not None and key == "val_bpd":
            ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(Y_LABELS.get(key, key))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def palette_for(keys: Collection[str]) -> dict[str, Any]:
    """One colour of seaborn's colorblind palette per key, in order (e.g. per estimator, for every figure)."""
    import seaborn as sns
    return dict(zip(keys, sns.color_palette("colorblind", max(1, len(keys)))))


def seed_band_figure(panels: dict[str, dict[str, list[list[dict[str, Any]]]]],
                     keys: tuple[str, ...] = ("val_bpd", "val_kld"), title: str | None = None,
                     colors: dict[str, Any] | None = None, dashed: Collection[str] = ()) -> Figure:
    """Learning curves over seeds: one column per panel (e.g. a latent type), one row per history key; per label
    the mean over its seeds' histories and a band of one standard deviation (seaborn ``lineplot``,
    ``errorbar="sd"``). ``panels``: {panel title: {label: [one history per seed]}}; ``colors``: {label: colour}
    (so that one estimator keeps its colour across panels; default: the colorblind palette in each panel's order),
    ``dashed``: the labels drawn dashed (e.g. each estimator's "+ SG")."""
    import pandas as pd
    import seaborn as sns
    fig = Figure(figsize=(5.0 * max(1, len(panels)), 3.4 * len(keys)), layout="constrained")
    axes = fig.subplots(len(keys), max(1, len(panels)), squeeze=False)
    for col, (panel, curves) in enumerate(panels.items()):
        rows = [{"label": label, "seed": i, "epoch": h["epoch"], **{k: h.get(k) for k in keys}}
                for label, histories in curves.items() for i, history in enumerate(histories) for h in history]
        data = pd.DataFrame(rows)
        default = sns.color_palette("colorblind", max(1, len(curves)))
        palette = {label: (colors or {}).get(label, default[i]) for i, label in enumerate(curves)}
        dashes = {label: (4, 2) if label in dashed else "" for label in curves}
        for row, key in enumerate(keys):
            ax = axes[row][col]
            if not data.empty:
                sns.lineplot(data=data, x="epoch", y=key, hue="label", hue_order=list(curves), palette=palette,
                             style="label", style_order=list(curves), dashes=dashes,
                             errorbar="sd", ax=ax, linewidth=1.2, legend=row == 0)
            ax.set_ylabel(Y_LABELS.get(key, key))
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(panel)
                if ax.get_legend() is not None:
                    ax.legend(fontsize=8, title=None)
    if title:
        fig.suptitle(title)
    return fig


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def variance_figure(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Est % (share of the reconstruction gradient's variance due to latent sampling) per method with its 95%
    bootstrap interval, one panel per measured epoch titled by its optimizer steps, the 50% line ("dominates")
    dashed, and the paper's Est % as black markers only where the paper's point is at the same steps.
    ``table`` is :func:`silentvae.report.tables.table1`'s DataFrame. Est % above 100 (corrected Batch Var < 0) is drawn
    as measured; an exactly zero Est Var (SG) is labelled "0"."""
    import seaborn as sns
    df = table[pd.to_numeric(table["Epoch"], errors="coerce").notna()].copy()
    epochs = sorted(int(e) for e in df["Epoch"].unique())
    fig = Figure(figsize=(max(5.0, 3.6 * max(1, len(epochs))), 4.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(epochs)), squeeze=False, sharey=True)[0]
    color = sns.color_palette("colorblind", 1)[0]
    for ax, epoch in zip(axes, epochs):
        sub = df[df["Epoch"].astype(int) == epoch]
        x = np.arange(len(sub))
        pct = np.array([_num(v) for v in sub["Est %"]])
        low = np.array([_num(v) for v in sub["Est % CI low"]])
        high = np.array([_num(v) for v in sub["Est % CI high"]])
        yerr = np.vstack([np.where(np.isnan(low), 0, pct - low), np.where(np.isnan(high), 0, high - pct)])
        ax.bar(x, pct, 0.6, color=color, yerr=np.clip(yerr, 0, None), capsize=3, label="ours (95% CI)")
        for xi, v in zip(x, pct):
            if v == 0:
                ax.annotate("0", (xi, 0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize=7)
        paper = np.array([_num(v) for v in sub["Est % (paper)"]])
        if np.isfinite(paper).any():
            ax.scatter(x, paper, marker="_", s=160, color="k", zorder=3, label="paper, same steps")
        ax.axhline(50.0, color="0.4", ls="--", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(list(sub["Method"]), rotation=35, ha="right", fontsize=8)
        steps, pe = sub["Steps"].iloc[0], sub["Paper epoch"].iloc[0]
        head = f"epoch {epoch}" + (f" = {int(_num(steps)):,} steps" if np.isfinite(_num(steps)) else "")
        tail = (f"paper epoch {int(_num(pe))} = {int(_num(sub['Paper steps'].iloc[0])):,} steps"
                if np.isfinite(_num(pe)) else "no paper point at these steps")
        ax.set_title(f"{head}\n({tail})", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("Est % of gradient variance")
    legend = {}
    for ax in axes:                                 # the paper's markers appear only in panels with a paper point
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    axes[0].legend(list(legend.values()), list(legend), fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def taylor_figure(taylor: dict[str, Any], title: str | None = None) -> Figure:
    """Left: bar chart (log scale) of each estimator's L2 deviation from the exact gradient at the largest k
    (both REINFORCE baselines), paper values as black markers (its one REINFORCE value beside both). Right,
    when the check ran several k: each deviation against k (exact over the k most uncertain latents, the other
    d - k held at a draw from q)."""
    import seaborn as sns
    keys = [k for k in pv.TAYLOR_LABELS if k in taylor]
    colors = dict(zip(pv.TAYLOR_LABELS, sns.color_palette("colorblind", len(pv.TAYLOR_LABELS))))
    ours = np.array([float(taylor[k]) for k in keys])
    paper = np.array([pv.TAYLOR_BIAS[pv.TAYLOR_PAPER_KEY[k]] for k in keys])
    by_k = taylor.get("by_free_latents") or []
    fig = Figure(figsize=(9.0 if len(by_k) > 1 else 5.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 2 if len(by_k) > 1 else 1, squeeze=False)[0]
    ax = axes[0]
    x = np.arange(len(keys))
    ax.bar(x, np.where(ours > 0, ours, np.nan), 0.6, color=[colors[k] for k in keys], label="ours")
    ax.scatter(x, paper, marker="D", color="k", zorder=3, label="paper")
    for xi, v in zip(x, ours):
        ax.annotate(f"{v:.3g}", (xi, v if v > 0 else 1.0), xytext=(0, 3), textcoords="offset points",
                    ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([pv.TAYLOR_LABELS[k].replace(" (", "\n(").replace(": ", ":\n") for k in keys], fontsize=7)
    ax.set_ylabel("L2 distance to exact gradient")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if len(by_k) > 1:
        ks = [int(r["free_latents"]) for r in by_k]
        for k in keys:
            axes[1].plot(ks, [float(r[k]) for r in by_k], "o-", color=colors[k], label=pv.TAYLOR_LABELS[k])
        axes[1].set_yscale("log")
        axes[1].set_xticks(ks)
        axes[1].set_xlabel(f"k enumerated latents (the other {taylor.get('latent_dim', 'd')} - k held)")
        axes[1].grid(True, alpha=0.3)
        axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
