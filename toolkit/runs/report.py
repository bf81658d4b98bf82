"""``python -m toolkit report RUN``: one self-contained HTML page over every shard's rows of a run.

The page holds a summary table (mean ± 95% CI per method and metric), paired comparisons between methods on the same
items, the deletion curves and per-method bars as inline SVG, a gallery of each method's best and worst items (their
overlays inlined as data URLs, their highlighted text inline), and every failed item with its reason. Nothing is
fetched: the file can be mailed or archived as it is.
"""
from __future__ import annotations

import base64
import html
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import mean_confidence_interval
from .store import METRICS, atomic_write, load_run

LOWER_IS_BETTER = {"morf_auc"}  # every other metric: higher is better (lerf_auc too)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
GALLERY = 3  # best and worst items per method
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:.9em}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:8px;width:220px;font-size:.85em}
.card img{width:200px;image-rendering:pixelated}.sig{font-weight:bold}.failed td{text-align:left}
svg{background:#fff;border:1px solid #eee;margin:4px}
"""


def _finite(values: list[Any]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def _cell(values: np.ndarray) -> str:
    if values.size == 0:
        return "—"
    mean, ci = mean_confidence_interval(values)
    return f"{mean:.3f} ± {ci:.3f}" if math.isfinite(ci) else f"{mean:.3f}"


def summary(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """method -> metric -> the finite values of its finished items."""
    table: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        table[method] = {m: _finite([r[m] for r in mine]) for m in (*METRICS, "score", "seconds")}
    return table


def paired(rows: list[dict[str, Any]], methods: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """For each pair of methods and metric: the difference on the items both explained, signed so that a positive
    gain means the first method did better; mean, 95% CI half-width, count."""
    by_method = {m: {r["item_id"]: r for r in rows if r["method"] == m and r["status"] == "ok"} for m in methods}
    comparisons = []
    for first, second in itertools.combinations(methods, 2):
        shared = sorted(set(by_method[first]) & set(by_method[second]))
        for metric in metrics:
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            gains = _finite([None if by_method[first][i][metric] is None or by_method[second][i][metric] is None
                             else sign * (by_method[first][i][metric] - by_method[second][i][metric]) for i in shared])
            if gains.size >= 2:
                mean, ci = mean_confidence_interval(gains)
                comparisons.append({"first": first, "second": second, "metric": metric, "gain": mean, "ci": ci,
                                    "n": int(gains.size)})
    return comparisons


# --- SVG plots ------------------------------------------------------------------------------------

def curves_svg(rows: list[dict[str, Any]], methods: list[str], width: int = 420, height: int = 260) -> str:
    """The mean deletion curve of each method (score against the share removed), with its mean AUC."""
    left, top, right, bottom = 50, 20, 130, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    means = {}
    for method in methods:
        curves = [(r["curve_fractions"], r["curve_scores"]) for r in rows
                  if r["method"] == method and r["status"] == "ok" and r["curve_scores"]]
        if curves:
            grid = np.asarray(curves[0][0])
            scores = np.asarray([np.interp(grid, f, s) for f, s in curves])
            means[method] = (grid, scores.mean(axis=0))
    if not means:
        return ""
    peak = max(float(s.max()) for _, s in means.values()) or 1.0
    x = lambda f: left + f / max(float(g[-1]) for g, _ in means.values()) * plot_w  # noqa: E731
    y = lambda s: top + plot_h - s / peak * plot_h  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="deletion curves">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
             f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle" font-size="12">share of '
             'the input removed, most relevant first</text>',
             f'<text x="12" y="{top + plot_h / 2}" font-size="12" transform="rotate(-90 12 {top + plot_h / 2})" '
             'text-anchor="middle">mean score</text>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{peak:.2f}</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="10">0</text>']
    for index, (method, (grid, scores)) in enumerate(means.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{x(f):.1f},{y(s):.1f}" for f, s in zip(grid, scores))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{left + plot_w + 8}" y="{top + 14 + 16 * index}" font-size="12" fill="{colour}">'
                     f'{html.escape(method)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(table: dict[str, dict[str, np.ndarray]], metric: str, width: int = 300, height: int = 200) -> str:
    """One bar per method: the metric's mean, with its 95% CI as an error bar."""
    values = {m: mean_confidence_interval(v[metric]) if v[metric].size else None for m, v in table.items()}
    values = {m: v for m, v in values.items() if v is not None}
    if not values:
        return ""
    left, top, bottom = 40, 24, 40
    plot_h = height - top - bottom
    peak = max(mean + (ci if math.isfinite(ci) else 0) for mean, ci in values.values())
    peak = peak if peak > 0 else 1.0
    slot = (width - left - 10) / len(values)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{metric} per method">',
             f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12">{metric}'
             f'{" (lower is better)" if metric in LOWER_IS_BETTER else ""}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#444"/>']
    for index, (method, (mean, ci)) in enumerate(values.items()):
        colour = PALETTE[index % len(PALETTE)]
        x0, bar_h = left + index * slot + slot * 0.15, max(mean, 0) / peak * plot_h
        parts.append(f'<rect x="{x0:.1f}" y="{top + plot_h - bar_h:.1f}" width="{slot * 0.7:.1f}" height="{bar_h:.1f}" '
                     f'fill="{colour}"><title>{html.escape(method)}: {mean:.3f} ± {ci:.3f}</title></rect>')
        if math.isfinite(ci):
            centre = x0 + slot * 0.35
            low, high = (top + plot_h - max(mean + d, 0) / peak * plot_h for d in (-ci, ci))
            parts.append(f'<line x1="{centre:.1f}" y1="{low:.1f}" x2="{centre:.1f}" y2="{high:.1f}" stroke="#000"/>')
        parts.append(f'<text x="{x0 + slot * 0.35:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                     f'font-size="11">{html.escape(method)}</text>')
        parts.append(f'<text x="{x0 + slot * 0.35:.1f}" y="{top + plot_h - bar_h - 4:.1f}" text-anchor="middle" '
                     f'font-size="10">{mean:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- the page -------------------------------------------------------------------------------------

def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _card(folder: Path, row: dict[str, Any], metric: str) -> str:
    picture = ""
    if row.get("overlay") and (folder / row["overlay"]).is_file():
        picture = f'<img alt="overlay of {html.escape(row["item"])}" src="{_data_url(folder / row["overlay"])}">'
    if row.get("html") and (folder / row["html"]).is_file():
        picture += f'<div>{(folder / row["html"]).read_text(encoding="utf-8")}</div>'
    target = f", target {html.escape(str(row['target']))}" if row.get("target") is not None else ""
    return (f'<div class="card">{picture}<div><b>{html.escape(row["item"])}</b></div>'
            f'<div>prediction {html.escape(str(row["prediction"]))}{target}</div>'
            f'<div>{metric} = {row[metric]:.3f}</div></div>')


def gallery(folder: Path, rows: list[dict[str, Any]], methods: list[str], metric: str) -> str:
    """Each method's best and worst items by ``metric``."""
    sections = []
    for method in methods:
        scored = sorted((r for r in rows if r["method"] == method and r["status"] == "ok" and r[metric] is not None),
                        key=lambda r: r[metric], reverse=metric not in LOWER_IS_BETTER)
        if not scored:
            continue
        best, worst = scored[:GALLERY], scored[::-1][:GALLERY]
        sections.append(f"<h3>{html.escape(method)}: best</h3><div class='gallery'>"
                        + "".join(_card(folder, r, metric) for r in best) + "</div>"
                        f"<h3>{html.escape(method)}: worst</h3><div class='gallery'>"
                        + "".join(_card(folder, r, metric) for r in worst) + "</div>")
    return "".join(sections)


def render_report(folder: str | Path) -> str:
    folder = Path(folder)
    config, rows = load_run(folder)
    methods = [m.key for m in config.methods]
    table = summary(rows, methods)
    metrics = [m for m in METRICS if any(table[method][m].size for method in methods)]
    failed = [r for r in rows if r["status"] != "ok"]
    items = {r["item_id"] for r in rows}
    title = f"Run report: {config.model.name}, {config.task}"
    head = "".join(f"<th>{m}</th>" for m in (*metrics, "score", "seconds"))
    body = "".join(f"<tr><td>{html.escape(method)}</td><td>{table[method]['score'].size}</td>"
                   f"<td>{sum(r['method'] == method for r in failed)}</td>"
                   + "".join(f"<td>{_cell(table[method][m])}</td>" for m in (*metrics, "score", "seconds")) + "</tr>"
                   for method in methods)
    comparisons = paired(rows, methods, metrics)
    comparison_rows = "".join(
        f"<tr><td>{html.escape(c['first'])} vs {html.escape(c['second'])}</td><td>{c['metric']}</td>"
        f"<td class='{'sig' if abs(c['gain']) > c['ci'] else ''}'>{c['gain']:+.4f} ± {c['ci']:.4f}</td>"
        f"<td>{c['n']}</td></tr>" for c in comparisons)
    ranking = "morf_auc" if "morf_auc" in metrics else (metrics[0] if metrics else None)
    failed_rows = "".join(f"<tr><td>{html.escape(r['item'])}</td><td>{html.escape(r['method'])}</td>"
                          f"<td>{html.escape(r['error'] or '')}</td></tr>" for r in failed)
    shards = sorted({r["shard"] for r in rows})
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>{len(items)} items, {len(rows)} rows ({len(failed)} failed) from {len(shards)} shard(s): "
        f"{', '.join(shards)}. Model {html.escape(config.model.name)}; data {config.data.kind} "
        f"{html.escape(str(config.data.path or f'count {config.data.count}, seed {config.data.seed}'))}; "
        f"methods {html.escape(', '.join(methods))}; folder {html.escape(str(folder.resolve()))}.</p>",
        "<h2>Summary</h2><p class='note'>mean ± 95% CI over the items each method explained. morf_auc: area under "
        "the deletion curve (lower is better); mass/rank accuracy and pointing game (image and token): share of "
        "relevance on the ground truth (higher is better); score: the explained score; seconds per item.</p>",
        f"<table><tr><th>method</th><th>items</th><th>failed</th>{head}</tr>{body}</table>",
        "<h2>Plots</h2>", curves_svg(rows, methods), "<div>" + "".join(bars_svg(table, m) for m in metrics) + "</div>",
        "<h2>Paired comparisons</h2><p class='note'>per item, the first method's metric minus the second's, signed "
        "so that positive means the first did better; mean ± 95% CI over the items both explained (bold: the "
        "interval excludes 0).</p>",
        f"<table><tr><th>methods</th><th>metric</th><th>gain</th><th>items</th></tr>{comparison_rows}</table>"
        if comparisons else "<p>No pair of methods to compare.</p>",
    ]
    if ranking:
        sections += [f"<h2>Gallery</h2><p class='note'>best and worst items of each method by {ranking}.</p>",
                     gallery(folder, rows, methods, ranking)]
    sections += ["<h2>Failed items</h2>",
                 f"<table class='failed'><tr><th>item</th><th>method</th><th>reason</th></tr>{failed_rows}</table>"
                 if failed else "<p>None.</p>"]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")


def write_report(folder: str | Path) -> Path:
    """report.html in the run folder, from every shard's finished rows."""
    path = Path(folder) / "report.html"
    atomic_write(path, render_report(folder))
    return path

