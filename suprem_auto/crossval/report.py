"""The cross-validation report: one self-contained HTML page (images inlined) and a Markdown twin.

Sections: dataset fingerprint, plans chosen, per-configuration and per-class Dice/NSD across folds (mean and std
over folds) with box plots, what each fold's training run did (network, precision, iterations, time, speed,
warnings on busy folds) and its learning curves against iterations, pretrained-vs-scratch paired comparison per class
(mean difference and a Wilcoxon signed-rank test over cases), and example slices for the best and worst cases.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from suprem_auto.crossval import figures
from suprem_auto.crossval.fold_runs import SPEED_VARIATION_LIMIT, FoldRun, read_fold_runs
from suprem_auto.crossval.gather import ModelCrossValidation, load_fold_summaries
from suprem_auto.planning.view import plans_view
from suprem_auto.utils.atomic import atomic_write, load_json


@dataclass
class Section:
    """A report section: a title, paragraphs, tables (header + rows) and images (name, png bytes)."""

    title: str
    paragraphs: List[str] = field(default_factory=list)
    tables: List[Tuple[List[str], List[List[str]]]] = field(default_factory=list)
    images: List[Tuple[str, bytes]] = field(default_factory=list)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _per_case_values(summary: Dict[str, Any], metric: str) -> Dict[str, Dict[str, float]]:
    """{class_key: {case: value}} from an evaluation summary."""
    out: Dict[str, Dict[str, float]] = {}
    for case in summary.get("metric_per_case", []):
        for key, metrics in case["metrics"].items():
            value = metrics.get(metric)
            out.setdefault(key, {})[case["case"]] = float("nan") if value is None else float(value)
    return out


def fingerprint_section(fingerprint: Dict[str, Any]) -> Section:
    """Dataset fingerprint: case count, median spacing/shape, foreground intensities."""
    spacings = np.asarray(fingerprint.get("spacings", []), dtype=float)
    shapes = np.asarray(fingerprint.get("shapes_after_crop", []), dtype=float)
    section = Section("Dataset fingerprint")
    rows = [["cases", str(len(spacings))]]
    if spacings.size:
        rows.append(["median spacing (z, y, x) mm", ", ".join(f"{v:.3g}" for v in np.median(spacings, 0))])
    if shapes.size:
        rows.append(["median shape after crop (z, y, x)", ", ".join(f"{v:.0f}" for v in np.median(shapes, 0))])
    for channel, stats in fingerprint.get("foreground_intensity_properties_per_channel", {}).items():
        rows.append([f"channel {channel} foreground intensity",
                     ", ".join(f"{k} {_fmt(float(v), 3)}" for k, v in stats.items())])
    section.tables.append((["property", "value"], rows))
    return section


def plans_section(models: Sequence[ModelCrossValidation]) -> Section:
    """What each compared configuration was planned with."""
    section = Section("Plans chosen")
    rows = []
    for m in models:
        plans_file = m.model_dir / "plans.json"
        if not plans_file.is_file():
            continue
        plans = plans_view(load_json(plans_file), plans_file)
        if m.configuration not in plans.configurations:
            continue
        config = plans.configuration(m.configuration)
        norm = ", ".join(n.scheme for n in config.normalization)
        rows.append([m.name, config.architecture.name, ", ".join(f"{s:.3g}" for s in config.spacing),
                     "x".join(str(p) for p in config.patch_size), str(config.batch_size),
                     norm, str(plans.reorient_to_ras)])
    section.tables.append((["model", "network", "spacing mm", "patch", "batch", "normalization", "RAS"], rows))
    return section


def results_section(models: Sequence[ModelCrossValidation], class_names: Dict[str, str]) -> Section:
    """Per-model, per-class Dice and NSD: mean and std across folds, pooled CV value, box plots over cases."""
    section = Section("Cross-validation results")
    header = ["model", "class", "Dice (pooled)", "Dice fold mean", "Dice fold std", "NSD (pooled)",
              "NSD fold mean", "NSD fold std", "folds done", "folds missing"]
    rows = []
    per_case: Dict[str, Dict[str, List[float]]] = {}
    for m in models:
        folds = load_fold_summaries(m.model_dir, m.finished_folds)
        pooled_dice = _per_case_values(m.summary, "dice")
        per_case[m.name] = {k: list(v.values()) for k, v in pooled_dice.items()}
        for key, name in class_names.items():
            dice_folds = [(s.get("mean", {}).get(key) or {}).get("dice") for s in folds.values()]
            nsd_folds = [(s.get("mean", {}).get(key) or {}).get("nsd") for s in folds.values()]
            d_mean, d_std = figures.mean_std([float("nan") if v is None else v for v in dice_folds])
            n_mean, n_std = figures.mean_std([float("nan") if v is None else v for v in nsd_folds])
            pooled = m.summary.get("mean", {}).get(key, {})
            rows.append([m.name, name, _fmt(pooled.get("dice")), _fmt(d_mean), _fmt(d_std), _fmt(pooled.get("nsd")),
                         _fmt(n_mean), _fmt(n_std), " ".join(map(str, m.finished_folds)) or "none",
                         " ".join(map(str, m.missing_folds)) or "none"])
        fg = m.summary.get("foreground_mean", {})
        rows.append([m.name, "foreground mean", _fmt(fg.get("dice")), "", "", _fmt(fg.get("nsd")), "", "",
                     " ".join(map(str, m.finished_folds)), " ".join(map(str, m.missing_folds)) or "none"])
    section.tables.append((header, rows))
    if per_case:
        section.images.append(("dice_boxplot.png", figures.dice_boxplot(per_case, class_names)))
    return section


NOT_RECORDED = "not recorded"


def _cell(value: Any, text: Callable[[Any], str]) -> str:
    """``text(value)``, or "not recorded" when the fold folder does not hold the value."""
    return NOT_RECORDED if value is None else text(value)


def _network(run: FoldRun) -> str:
    if run.architecture is None:
        return NOT_RECORDED
    return run.architecture + (f" ({'-'.join(map(str, run.features))})" if run.features else "")


def fold_run_rows(model: ModelCrossValidation, runs: Sequence[FoldRun]) -> List[List[str]]:
    """One table row per fold: network, width factor, parameters, precision, iterations, time and speed."""
    return [[model.name, str(r.fold), _network(r), _cell(r.width_factor, lambda v: f"{v:g}"),
             _cell(r.parameters, lambda v: f"{v:,}"), r.precision or NOT_RECORDED,
             _cell(r.iterations, lambda v: f"{v}{' (estimated)' if r.iterations_estimated else ''}"),
             _cell(r.wall_time_s, lambda v: f"{v:.0f} ({r.wall_time_source})"),
             _cell(r.sec_per_iteration, lambda v: f"{v:.3f}"), _cell(r.speed_ratio, lambda v: f"{v:.2f}"),
             f"speed varied {r.speed_ratio:.1f}x: busy machine?" if r.speed_varied else ""] for r in runs]


def speed_warnings(model: ModelCrossValidation, runs: Sequence[FoldRun]) -> List[str]:
    """One warning per fold whose epochs' seconds per iteration varied more than the limit."""
    return [f"WARNING: {model.name} fold {r.fold}: seconds per iteration varied {r.speed_ratio:.1f}x between epochs "
            f"(slowest / fastest above {SPEED_VARIATION_LIMIT:g}); the machine was probably busy, so a low Dice of "
            f"this fold may come from fewer iterations rather than from a bad model." for r in runs if r.speed_varied]


def learning_curves_section(models: Sequence[ModelCrossValidation]) -> Section:
    """What each fold really did (network, precision, iterations, time, speed; warnings on busy folds) and the
    learning curves of every fold against iterations."""
    section = Section("Training runs and learning curves")
    section.paragraphs.append(
        "Per fold: the network trained (name and feature widths), its width factor, parameter count and precision, "
        "the iterations done, the training time and the mean seconds per iteration; \"speed max/min\" is the "
        "slowest over the fastest epoch's seconds per iteration. Curves are drawn against iterations, since epochs "
        "differ in length under a time budget.")
    rows: List[List[str]] = []
    for m in models:
        runs = read_fold_runs(m.model_dir, m.finished_folds)
        rows += fold_run_rows(m, runs)
        section.paragraphs += speed_warnings(m, runs)
        png = figures.learning_curves(runs, m.name)
        if png is not None:
            section.images.append((f"curves_{len(section.images)}.png", png))
        else:
            section.paragraphs.append(f"{m.name}: no metrics.jsonl found.")
    section.tables.append((["model", "fold", "network", "width factor", "parameters", "precision", "iterations",
                            "training time s", "s / iteration", "speed max/min", "note"], rows))
    return section


def paired_comparison(pretrained: ModelCrossValidation, scratch: ModelCrossValidation,
                      class_names: Dict[str, str]) -> List[List[str]]:
    """Per class: mean Dice of both, mean paired difference and a Wilcoxon signed-rank p-value over shared cases."""
    from scipy.stats import wilcoxon

    a, b = _per_case_values(pretrained.summary, "dice"), _per_case_values(scratch.summary, "dice")
    rows = []
    for key, name in class_names.items():
        cases = sorted(set(a.get(key, {})) & set(b.get(key, {})))
        pairs = [(a[key][c], b[key][c]) for c in cases if not (math.isnan(a[key][c]) or math.isnan(b[key][c]))]
        if not pairs:
            rows.append([pretrained.name, scratch.name, name, "n/a", "n/a", "n/a", "n/a", "0"])
            continue
        x, y = np.asarray(pairs).T
        diff = x - y
        p = float("nan")
        if len(diff) >= 2 and np.any(diff != 0):
            p = float(wilcoxon(x, y).pvalue)
        rows.append([pretrained.name, scratch.name, name, _fmt(float(x.mean())), _fmt(float(y.mean())),
                     _fmt(float(diff.mean())), _fmt(p, 3), str(len(diff))])
    return rows


def comparison_section(pairs: Sequence[Tuple[ModelCrossValidation, ModelCrossValidation]],
                       class_names: Dict[str, str]) -> Section:
    """The paired pretrained-vs-scratch comparison."""
    section = Section("Pretrained vs. scratch (paired over cases)")
    if not pairs:
        section.paragraphs.append("No pretrained/scratch pair of the same configuration was trained.")
        return section
    rows = [row for p, s in pairs for row in paired_comparison(p, s, class_names)]
    section.tables.append((["pretrained", "scratch", "class", "Dice pretrained", "Dice scratch",
                            "mean difference", "Wilcoxon p", "cases"], rows))
    section.paragraphs.append("Positive differences favour the pretrained initialisation; p from a two-sided "
                              "Wilcoxon signed-rank test over the cases both models predicted.")
    return section


def _label_names(model_dir: Path) -> Dict[int, str]:
    """Label value -> name from the model folder's dataset.json copy ({} when there is none)."""
    dataset_json = model_dir / "dataset.json"
    labels = load_json(dataset_json).get("labels", {}) if dataset_json.is_file() else {}
    return {int(v): str(k) for k, v in labels.items() if isinstance(v, int) and not isinstance(v, bool)}


def examples_section(best: ModelCrossValidation, image_lookup, file_ending: str) -> Section:
    """Image slices with reference and prediction contours for the best and the worst case of the best model."""
    from suprem_auto.imageio import read_segmentation

    section = Section("Example predictions (best model)")
    cases = [c for c in best.summary.get("metric_per_case", [])]
    if not cases:
        return section

    def case_dice(c: Dict[str, Any]) -> float:
        values = [m["dice"] for k, m in c["metrics"].items() if k != "0" and m.get("dice") is not None]
        return float(np.mean(values)) if values else float("nan")

    scored = sorted(((case_dice(c), c) for c in cases if not math.isnan(case_dice(c))), key=lambda t: t[0])
    if not scored:
        return section
    for label, (dice, case) in (("best", scored[-1]), ("worst", scored[0])):
        image = image_lookup(case["case"])
        if image is None:
            continue
        reference = read_segmentation(case["reference_file"])[0][0]
        prediction = read_segmentation(case["prediction_file"])[0][0]
        png = figures.overlay_slice(image, reference, prediction, f"{label} case {case['case']} (mean foreground "
                                    f"Dice {dice:.3f})", _label_names(best.model_dir))
        section.images.append((f"example_{label}.png", png))
    return section


def render_html(title: str, sections: Sequence[Section]) -> str:
    """A self-contained HTML page (PNG images inlined as data URIs)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
             "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        for header, rows in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for name, png in s.images:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, sections: Sequence[Section], asset_dir_name: str) -> str:
    """The Markdown twin; images are referenced from ``asset_dir_name``."""
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [p + "\n" for p in s.paragraphs]
        for header, rows in s.tables:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
        lines += [f"![{name}]({asset_dir_name}/{name})\n" for name, _ in s.images]
    return "\n".join(lines)


def write_report(out_dir: Path, title: str, sections: Sequence[Section]) -> Tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` with its ``report_assets/`` images."""
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = out_dir / "report_assets"
    assets.mkdir(exist_ok=True)
    for s in sections:
        for name, png in s.images:
            atomic_write(assets / name, lambda p, data=png: p.write_bytes(data))
    html_path = atomic_write(out_dir / "report.html", lambda p: p.write_text(render_html(title, sections)))
    md_path = atomic_write(out_dir / "report.md", lambda p: p.write_text(render_markdown(title, sections,
                                                                                          assets.name)))
    return html_path, md_path
