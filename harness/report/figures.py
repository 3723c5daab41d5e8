"""The report's figures: seaborn / matplotlib drawn off-screen (Agg) and returned as PNG data URIs.

Every function takes the loaded `ReportData` and returns plain dicts for the template (title, caption, uri,
and whatever the text around the figure needs). Figures are `matplotlib.figure.Figure` objects, never pyplot
state, so nothing leaks between calls. Cells of synthetic (random-initialised) models never appear in an
accuracy figure; they do appear in the cost figures, labelled "(synthetic)".
"""

from __future__ import annotations

import base64
import io
import math
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from harness.formatting import lr_text, value
from harness.report.loader import perf_rows, task_label
from harness.report.pareto import pareto_front

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from harness.report.loader import ReportData

DPI = 100
MAX_NAMED = 6  # Pareto fronts with more points are labelled with numbers (the table below names them)
GIB = 2**30
_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.titleweight": "bold",
    "svg.fonttype": "none",
}


def _seaborn() -> Any:
    """seaborn, imported with matplotlib's Agg backend selected first (no display is ever needed)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import seaborn as sns

    return sns


@contextmanager
def _style() -> Iterator[Any]:
    import matplotlib

    sns = _seaborn()
    with sns.axes_style("whitegrid"), matplotlib.rc_context(_RC), warnings.catch_warnings():
        # seaborn 0.13 calls Colormap.set_bad, which matplotlib >= 3.11 marks as pending deprecation
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="seaborn")
        yield sns


def _figure(w: float, h: float) -> Any:
    """A figure with no layout engine: margins are set in inches by `_margins` (constrained layout would
    cost a second full draw per figure, which dominates the render time of a large matrix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _margins(
    fig: Any, left: float, right: float, bottom: float, top: float, wspace: float = 0.2, hspace: float = 0.3
) -> dict[str, float]:
    """gridspec_kw for `fig.subplots` from margins in inches."""
    w, h = fig.get_size_inches()
    return {
        "left": left / w,
        "right": 1 - right / w,
        "bottom": bottom / h,
        "top": 1 - top / h,
        "wspace": wspace,
        "hspace": hspace,
    }


def to_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def palette(names: list[str]) -> dict[str, Any]:
    """A fixed colour per name (methods), the same in every figure."""
    sns = _seaborn()

    colours = (
        sns.color_palette("tab10", max(len(names), 1)) if len(names) <= 10 else sns.color_palette("husl", len(names))
    )
    return {n: colours[i] for i, n in enumerate(names)}


MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "<", ">"]


def safe(text: str) -> str:
    """A string from the results, drawn literally: a '$' would otherwise start matplotlib mathtext."""
    return str(text).replace("$", r"\$")


def _model_label(model: str, synthetic: bool) -> str:
    return f"{model} (synthetic)" if synthetic else model


def method_label(row: Any) -> str:
    variant = row.get("variant") or "default"
    return row["method"] if variant == "default" else f"{row['method']} [{variant}]"


def short_label(row: dict[str, Any], with_model: bool) -> str:
    parts = [row["model"]] if with_model else []
    parts.append(method_label(row))
    if row.get("epochs"):
        parts.append(f"e{int(row['epochs'])}")
    if row.get("lr"):
        parts.append(f"lr {lr_text(row['lr'])}")
    if row.get("seed") and len(row.get("_seeds", [])) > 1:
        parts.append(f"s{int(row['seed'])}")
    return " ".join(parts)


def _trained_ok(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    return df[(df["status"] == "success") & (~df["is_base"].astype(bool))]


def _time_unit(seconds: list[float]) -> tuple[float, str]:
    top = max(seconds) if seconds else 0
    if top >= 2 * 3600:
        return 3600.0, "h"
    if top >= 120:
        return 60.0, "min"
    return 1.0, "s"


# ---------------------------------------------------------------------------------------------------- Pareto


def pareto_figures(data: ReportData, methods: list[str]) -> list[dict[str, Any]]:
    """Per task: accuracy vs peak memory, vs total training time and (where `eval.forgetting` measured it) vs
    forgetting, Pareto-optimal cells ringed and labelled. Synthetic models are left out. Returns per task
    {task, uri, fronts: {axis: [rows]}}."""
    df = perf_rows(_trained_ok(data.cells))  # cost axes: one device type, no shared GPUs
    out: list[dict[str, Any]] = []
    if df.empty:
        return out
    df = df[~df["synthetic"].astype(bool)]
    colours = palette(methods)
    models = sorted(df["model"].unique()) if not df.empty else []
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    for task in data.tasks:
        sub = df[df[f"acc:{task}"].notna()] if f"acc:{task}" in df else df.iloc[0:0]
        if sub.empty:
            continue
        records = [
            {
                **{k: value(v) for k, v in r.items()},
                "acc": r[f"acc:{task}"],
                "mem_gib": (value(r["mem_headline"]) or math.nan) / GIB,
                "train_time": value(r["train_time"]),
                "forgetting": value(r.get("forgetting")),
            }
            for r in sub.to_dict("records")
        ]
        times = [r["train_time"] for r in records if r["train_time"]]
        tscale, tunit = _time_unit(times)
        specs = [
            ("mem_gib", "peak memory (GiB, headline metric)", "memory"),
            ("train_time", f"training time, all epochs ({tunit})", "time"),
        ]
        if any(r["forgetting"] is not None for r in records):  # the third axis, where eval.forgetting measured it
            specs.append(("forgetting", "forgetting (Δ cross-entropy on general text, nats/token)", "forgetting"))
        with _style():
            fig = _figure(13 if len(specs) == 2 else 18, 4.6)
            axes = fig.subplots(1, len(specs), sharey=True, gridspec_kw=_margins(fig, 0.75, 1.9, 0.55, 0.35, 0.06))
            fronts: dict[str, list[dict[str, Any]]] = {}
            for ax, (xkey, xlabel, axis) in zip(axes, specs):
                fronts[axis] = _pareto_axis(
                    ax, data, task, records, xkey, xlabel, axis, colours, markers, models, tscale
                )
            axes[0].set_ylabel(safe(f"{task_label(task)} accuracy (%)"))
            _legend(
                fig,
                axes[1],
                colours,
                sorted(set(r["method"] for r in records), key=methods.index),
                markers if len(models) > 1 else {},
                flagged=any(r.get(f"degenerate:{task}") for r in records),
            )
            out.append(
                {
                    "task": task,
                    "label": task_label(task),
                    "uri": to_data_uri(fig),
                    "fronts": fronts,
                    "n_points": len(records),
                }
            )
    return out


def _pareto_axis(
    ax: Any,
    data: ReportData,
    task: str,
    records: list[dict[str, Any]],
    xkey: str,
    xlabel: str,
    axis: str,
    colours: dict[str, Any],
    markers: dict[str, str],
    models: list[str],
    tscale: float,
) -> list[dict[str, Any]]:
    """One panel of a task's Pareto figure: the cells, the front (ringed, labelled), the reference lines; returns the
    front's rows."""
    base_acc = data.cells.attrs.get("base_acc", {})
    pts = [r for r in records if r.get(xkey) is not None and not _nan(r[xkey])]
    scale = tscale if axis == "time" else 1.0
    for r in pts:
        r["_x"] = r[xkey] / scale
    idx = pareto_front(pts, maximize=["acc"], minimize=["_x"])
    front = sorted((pts[i] for i in idx), key=lambda r: r["_x"])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in pts:
        groups.setdefault((r["method"], r["model"]), []).append(r)
    for (method, model), grp in groups.items():  # one collection per method and model: fast
        ax.scatter(
            [r["_x"] for r in grp],
            [100 * r["acc"] for r in grp],
            color=colours.get(method, "grey"),
            marker=markers.get(model, "o"),
            s=36,
            alpha=0.85,
            linewidths=0,
            zorder=3,
        )
    if front:
        xs = [r["_x"] for r in front]
        ys = [100 * r["acc"] for r in front]
        ax.step(xs, ys, where="post", color="black", lw=1, ls="--", alpha=0.6, zorder=2)
        ax.scatter(xs, ys, s=150, facecolors="none", edgecolors="black", linewidths=1.3, zorder=4)
    flagged = [r for r in pts if r.get(f"degenerate:{task}")]
    if flagged:  # one answer on nearly every item: its accuracy is the share of that answer's keys
        ax.scatter(
            [r["_x"] for r in flagged],
            [100 * r["acc"] for r in flagged],
            marker="x",
            s=60,
            color="#b35c00",
            linewidths=1.4,
            zorder=5,
        )
    for model in models:
        for level, text, style in _reference_lines(data, model, task, base_acc, len(models) > 1):
            ax.axhline(100 * level, lw=0.9, zorder=1, **style)
            ax.annotate(
                safe(text),
                (0.99, 100 * level),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=7,
                color=style["color"],
            )
    xs_all = [r["_x"] for r in pts]
    if axis != "forgetting" and xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20:
        ax.set_xscale("log")
    if len(front) <= MAX_NAMED:
        texts = [short_label(r, with_model=len(models) > 1) for r in front]
    else:  # many points: numbers, explained by the table under the figure
        texts = [str(k + 1) for k in range(len(front))]
    _label_front(ax, front, [safe(t) for t in texts], gap=0.06 if len(front) <= MAX_NAMED else 0.04)
    if ax.get_xscale() == "log":
        _plain_log_ticks(ax)
    ax.set_xlabel(xlabel)
    what = {"memory": "peak memory", "time": "time"}.get(axis, axis)
    ax.set_title(safe(f"{task_label(task)}: accuracy vs {what}"))
    return front


def _reference_lines(
    data: ReportData, model: str, task: str, base_acc: dict[Any, float], named: bool
) -> list[tuple[float, str, dict[str, Any]]]:
    """The horizontal lines a cell must clear: the untrained model, and the best constant answer on the same items
    (a cell below it does not beat "always <majority>")."""
    out = []
    b = base_acc.get((model, task))
    if b is not None:
        out.append((b, f"base {model}" if named else "base (untrained)", {"color": "dimgrey", "ls": ":"}))
    maj = (data.baselines.get((model, task)) or {}).get("majority") or {}
    if maj.get("acc") is not None:
        text = f'always "{maj["answer"]}"' + (f" ({model})" if named else " (best trivial baseline)")
        out.append((maj["acc"], text, {"color": "#b35c00", "ls": "-."}))
    return out


def _plain_log_ticks(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _label_front(ax: Any, front: list[dict[str, Any]], texts: list[str], gap: float = 0.06) -> None:
    """Label the Pareto points without overlap: labels sit just above their point, pushed apart vertically
    (in axes fractions) where they would collide, on the left of points in the right third of the axes."""
    if not front:
        return
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.1 * (hi - lo))
    to_axes = ax.transScale + ax.transLimits
    pos = [to_axes.transform((r["_x"], 100 * r["acc"])) for r in front]
    order = sorted(range(len(front)), key=lambda i: pos[i][1])
    ys: dict[int, float] = {}
    last = -1.0
    for i in order:
        ys[i] = max(pos[i][1] + 0.035, last + gap)
        last = ys[i]
    top = 0.97
    for i in reversed(order):  # squeeze back under the top edge
        ys[i] = min(ys[i], top)
        top = ys[i] - gap
    for i in order:
        fx, fy = pos[i]
        right = fx > 0.66
        ax.annotate(
            texts[i],
            (front[i]["_x"], 100 * front[i]["acc"]),
            xycoords="data",
            xytext=(fx - 0.025 if right else fx + 0.025, ys[i]),
            textcoords="axes fraction",
            ha="right" if right else "left",
            va="center",
            fontsize=7.5,
            zorder=5,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.6, "shrinkA": 0, "shrinkB": 6},
        )


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _legend(
    fig: Any, ax: Any, colours: dict[str, Any], methods: list[str], markers: dict[str, str], flagged: bool = False
) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colours[m], label=safe(m)) for m in methods]
    handles += [Line2D([], [], marker=mk, ls="", color="dimgrey", label=safe(model)) for model, mk in markers.items()]
    handles.append(
        Line2D([], [], marker="o", ls="--", color="black", markerfacecolor="none", markersize=9, label="Pareto front")
    )
    if flagged:
        handles.append(Line2D([], [], marker="x", ls="", color="#b35c00", label="one answer ≥ 95 %"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


# ---------------------------------------------------------------------------------------------------- curves


def _representatives(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per method (and variant): the longest run at the learning rate with the lowest final validation loss
    (or final training loss when no validation loss was recorded); seed as low as possible."""
    picks = []
    for _, grp in df.groupby(["method", "variant"], sort=False):
        rows = grp.to_dict("records")
        rows = [r for r in rows if r["loss_curve"] or r["val_loss"]]
        if not rows:
            continue
        top = max(r["epochs"] or 0 for r in rows)
        rows = [r for r in rows if (r["epochs"] or 0) == top]

        def final(r: dict[str, Any]) -> float:
            if r["val_loss"] and r["val_loss"][-1] is not None:
                return float(r["val_loss"][-1])
            return float(r["loss_curve"][-1][1]) if r["loss_curve"] else math.inf

        picks.append(min(rows, key=lambda r: (final(r), r["seed"] or 0)))
    return picks


def training_curves(data: ReportData, methods: list[str]) -> list[dict[str, Any]]:
    """Per model: training loss per step and validation loss per epoch, one line per method."""
    df = _trained_ok(data.cells)
    out: list[dict[str, Any]] = []
    if df.empty:
        return out
    for model, grp in df.groupby("model", sort=True):
        picks = _representatives(grp)
        if not picks:
            continue
        # one colour per line (a method's variants are lines of their own), in the report's method order
        picks.sort(key=lambda r: (methods.index(r["method"]) if r["method"] in methods else 99, r["variant"]))
        colours = palette([f"{r['method']}|{r['variant']}" for r in picks])
        synthetic = bool(grp["synthetic"].iloc[0])
        with _style():
            rows = math.ceil(len(picks) / 3)  # legend rows under the panels
            fig = _figure(13, 3.6 + 0.22 * rows)
            ax1, ax2 = fig.subplots(
                1, 2, width_ratios=[1.6, 1], gridspec_kw=_margins(fig, 0.75, 0.2, 0.75 + 0.22 * rows, 0.35, 0.18)
            )
            any_val = False
            val_points: list[float] = []
            max_epochs = 1
            for r in picks:
                label = safe(f"{method_label(r)} (lr {lr_text(r['lr'])}, {int(r['epochs'] or 0)} ep)")
                colour = colours[f"{r['method']}|{r['variant']}"]
                curve = [(float(s), float(v)) for s, v in r["loss_curve"] if v is not None]
                if curve:
                    ax1.plot([c[0] for c in curve], [c[1] for c in curve], color=colour, lw=1.2, label=label)
                if r["val_loss"]:
                    any_val = True
                    vals = [float(v) if v is not None else math.nan for v in r["val_loss"]]
                    val_points += [v for v in vals if not math.isnan(v)]
                    max_epochs = max(max_epochs, len(vals))
                    ax2.plot(range(1, len(vals) + 1), vals, color=colour, marker="o", lw=1.4, label=label)
            ax1.set_xlabel("optimizer step")
            ax1.set_ylabel("training loss")
            ax1.set_title(safe(f"{_model_label(model, synthetic)}: training loss"))
            ax2.set_xlabel("epoch")
            ax2.set_ylabel("validation loss")
            ax2.set_title("validation loss per epoch")
            from matplotlib.ticker import MaxNLocator

            ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax2.set_xlim(0.5, max_epochs + 0.5)  # whole epochs only, even for one
            if max_epochs <= 3:
                ax2.set_xticks(range(1, max_epochs + 1))
            if val_points and max_epochs == 1:
                # one point per line needs a scale: the training-loss axis (so the two panels compare), widened
                # to hold every validation point; never a ±5 % zoom around one value
                lo, hi = ax1.get_ylim() if ax1.has_data() else (min(val_points), max(val_points))
                lo, hi = min(lo, min(val_points)), max(hi, max(val_points))
                pad = 0.05 * (hi - lo) if hi > lo else max(0.1 * abs(hi), 0.1)
                ax2.set_ylim(lo - pad, hi + pad)
            if not any_val:
                ax2.text(
                    0.5,
                    0.5,
                    "no validation loss recorded",
                    ha="center",
                    va="center",
                    transform=ax2.transAxes,
                    color="dimgrey",
                )
            # under the panels, never over the lines
            handles, labels = ax1.get_legend_handles_labels() or ax2.get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
            out.append({"model": model, "synthetic": synthetic, "uri": to_data_uri(fig)})
    return out


# ---------------------------------------------------------------------------------------------------- heatmaps


def method_block_label(label: str, width_in: float, size: float = 8.5) -> tuple[str, float]:
    """(text, font size) of a method's name over a heatmap block `width_in` inches wide: wrapped at spaces to fit,
    smaller type when one word alone is too wide (bold text: about 0.62 em per character)."""
    import textwrap

    for fs in (size, 7.5, 6.5):
        chars = max(3, int(width_in * 72 / (fs * 0.62)))
        lines = textwrap.wrap(label, width=chars, break_long_words=False, break_on_hyphens=False) or [label]
        if max(len(line) for line in lines) <= chars:
            return "\n".join(lines), fs
    return "\n".join(textwrap.wrap(label, width=chars, break_long_words=True)), 6.5


def heatmaps(data: ReportData, methods: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per (non-synthetic) model: learning rate x epochs heatmaps of accuracy, one block per method, one row
    of blocks per task. Colour = difference to the model's base row in points (when there is one); text =
    accuracy in % (mean over seeds). Returns the figures and the synthetic models that were left out."""
    df = _trained_ok(data.cells)
    out: list[dict[str, Any]] = []
    if df.empty:
        return out, []
    skipped = sorted(df[df["synthetic"].astype(bool)]["model"].unique())
    df = df[~df["synthetic"].astype(bool)].copy()
    if df.empty or not data.tasks:
        return out, skipped
    import matplotlib
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    df["mlabel"] = [method_label(r) for r in df.to_dict("records")]
    base_acc = data.cells.attrs.get("base_acc", {})
    order = {m: i for i, m in enumerate(methods)}
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#f0f0f0")
    for model, grp in df.groupby("model", sort=True):
        mlabels = sorted(grp["mlabel"].unique(), key=lambda m: (order.get(m.split(" [")[0], 99), m))
        tasks = [t for t in data.tasks if grp[f"acc:{t}"].notna().any()]
        if not tasks:
            continue
        lrs = sorted(grp["lr"].dropna().unique(), reverse=True)
        blocks = [(ml, sorted(grp[grp["mlabel"] == ml]["epochs"].dropna().unique())) for ml in mlabels]
        columns = [(ml, ep) for ml, eps in blocks for ep in eps]
        if not lrs or not columns:
            continue
        cell_w = max(0.42, min(0.62, 10.6 / len(columns)))
        width = 0.85 + cell_w * len(columns) + 1.35
        longest_title = max(len(f"{model} · {task_label(t)} accuracy (%)") for t in tasks)
        width = max(width, 0.85 + 0.1 * longest_title)  # a narrow matrix must not cut its panel titles
        row_h = 0.34
        panel_h = row_h * len(lrs)
        # method names wrapped to their block's width (never overlapping a neighbour's)
        names = {ml: method_block_label(ml, cell_w * len(eps)) for ml, eps in blocks}
        n_lines = max(len(t.splitlines()) for t, _ in names.values())
        gap = 0.95 + 0.13 * (n_lines - 1)  # title, method names and the epochs axis between panels
        height = 0.25 + len(tasks) * (panel_h + gap)
        with _style():
            fig = _figure(width, height)
            for ti, task in enumerate(tasks):
                base = base_acc.get((model, task))
                accs = grp[f"acc:{task}"].astype(float)
                ref = base if base is not None else float(accs.mean())
                span = max(1.0, float((accs - ref).abs().max() * 100)) if accs.notna().any() else 1.0
                mat = np.full((len(lrs), len(columns)), np.nan)
                for ci, (ml, ep) in enumerate(columns):
                    sub = grp[(grp["mlabel"] == ml) & (grp["epochs"] == ep)]
                    means = sub.groupby("lr")[f"acc:{task}"].mean()
                    for ri, lr in enumerate(lrs):
                        if lr in means.index and not math.isnan(means[lr]):
                            mat[ri, ci] = means[lr]
                bottom = height - 0.25 - (ti + 1) * (panel_h + gap) + 0.45
                ax = fig.add_axes((0.85 / width, bottom / height, cell_w * len(columns) / width, panel_h / height))
                delta = (mat - ref) * 100
                im = ax.imshow(
                    np.ma.masked_invalid(delta),
                    cmap=cmap,
                    norm=TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span),
                    aspect="auto",
                    interpolation="nearest",
                )
                for (yi, xi), v in np.ndenumerate(mat):
                    if not math.isnan(v):
                        ax.text(
                            xi,
                            yi,
                            f"{100 * v:.1f}",
                            ha="center",
                            va="center",
                            fontsize=7.5,
                            color="white" if abs(delta[yi, xi]) > 0.6 * span else "black",
                        )
                ax.set_xticks(range(len(columns)), [str(int(ep)) for _, ep in columns])
                ax.set_yticks(range(len(lrs)), [lr_text(v) for v in lrs])
                ax.tick_params(length=0)
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.set_ylabel("learning rate")
                ax.set_xlabel("epochs", labelpad=2)
                pos = 0
                for bi, (ml, eps) in enumerate(blocks):
                    if bi:
                        ax.axvline(pos - 0.5, color="white", lw=4)
                    text, size = names[ml]
                    ax.text(
                        pos + (len(eps) - 1) / 2,
                        -0.62,
                        safe(text),
                        ha="center",
                        va="bottom",
                        fontsize=size,
                        fontweight="bold",
                        linespacing=1.05,
                    )
                    pos += len(eps)
                ax.set_title(
                    safe(f"{model} · {task_label(task)} accuracy (%)"), pad=30 + 10 * (n_lines - 1), loc="left"
                )
                cax = fig.add_axes(
                    ((0.85 + cell_w * len(columns) + 0.15) / width, bottom / height, 0.14 / width, panel_h / height)
                )
                fig.colorbar(im, cax=cax, label="Δ vs base (pts)" if base is not None else "Δ vs mean (pts)")
            out.append(
                {
                    "model": model,
                    "uri": to_data_uri(fig),
                    "has_base": any(base_acc.get((model, t)) is not None for t in tasks),
                }
            )
    return out, skipped


# ---------------------------------------------------------------------------------------------------- cost


def cost_bars(data: ReportData, methods: list[str]) -> dict[str, Any] | None:
    """Peak memory and time per epoch per method and model (median over the model's cells of that method,
    whiskers: min to max). Synthetic models are included: cost does not depend on the weights."""
    df = perf_rows(_trained_ok(data.cells))  # one device type, no shared GPUs
    if df.empty:
        return None
    df = df.copy()
    df["mlabel"] = [safe(method_label(r)) for r in df.to_dict("records")]
    df["model_label"] = [safe(_model_label(m, bool(s))) for m, s in zip(df["model"], df["synthetic"])]
    df["mem_gib"] = df["mem_headline"].astype(float) / GIB
    df["tpe"] = df["time_per_epoch"].astype(float)
    if df["mem_gib"].isna().all() and df["tpe"].isna().all():
        return None
    order = {m: i for i, m in enumerate(methods)}
    mlabels = sorted(df["mlabel"].unique(), key=lambda m: (order.get(m.split(" [")[0], 99), m))
    models = sorted(df["model_label"].unique())
    tscale, tunit = _time_unit([t for t in df["tpe"] if not _nan(t)])
    df["tpe_scaled"] = df["tpe"] / tscale
    with _style() as sns:
        height = max(2.6, 0.3 * len(mlabels) * max(1, len(models)) ** 0.6 + 1.0)
        fig = _figure(13, height)
        left = 0.25 + 0.075 * max(len(m) for m in mlabels)
        right = 0.45 + 0.07 * max(len(m) for m in models)
        ax1, ax2 = fig.subplots(1, 2, sharey=True, gridspec_kw=_margins(fig, left, right, 0.55, 0.35, 0.08))
        pal = sns.color_palette("Set2", len(models))
        for ax, col, xlabel in [
            (ax1, "mem_gib", "peak memory (GiB, headline metric)"),
            (ax2, "tpe_scaled", f"time per epoch ({tunit})"),
        ]:
            sub = df[df[col].notna()]
            if sub.empty:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
                continue
            sns.barplot(
                data=sub,
                y="mlabel",
                x=col,
                hue="model_label",
                order=mlabels,
                hue_order=models,
                estimator="median",
                errorbar=("pi", 100),
                err_kws={"linewidth": 1},
                capsize=0.15,
                palette=pal,
                ax=ax,
                orient="h",
            )
            ax.set_xlabel(xlabel)
            ax.set_ylabel("")
            if ax is ax1:
                ax.get_legend().remove() if ax.get_legend() else None
            else:
                ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        ax1.set_title("peak memory per method")
        ax2.set_title("time per epoch per method")
        return {"uri": to_data_uri(fig)}
