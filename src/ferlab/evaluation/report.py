"""The evaluation report as Markdown and as one self-contained HTML file.

Both render every number from the metrics dict with ``format_value``; each HTML cell that shows a
metric names it by a JSON pointer in ``data-metric``, so the page can be checked against
``metrics.json``.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferlab.evaluation.plots import Plot
from ferlab.evaluation.va_metrics import VA_DIMENSIONS, VA_LABELS, VA_METRICS
from ferlab.outputs import write_atomic
from ferlab.tta_modes import tta_mode

# A cell is plain text, or a path into the metrics dict whose value it shows.
Cell = str | tuple[str | int, ...]

SUMMARY = [
    ("model", "model"),
    ("data", "data"),
    ("split", "split"),
    ("samples", "samples"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro-F1"),
    ("weighted_f1", "weighted F1"),
    ("cohen_kappa", "Cohen's kappa"),
    ("krippendorff_alpha", "Krippendorff's alpha (nominal)"),
    ("roc_auc_macro", "ROC-AUC (macro, one-vs-rest)"),
    ("pr_auc_macro", "PR-AUC (macro, one-vs-rest)"),
    ("top2_accuracy", "top-2 accuracy"),
    ("ece", "ECE (15 bins)"),
    ("temperature", "temperature (fitted on val)"),
    ("ece_after_temperature", "ECE after temperature scaling"),
    ("majority_accuracy", "majority-class accuracy"),
]
PER_CLASS = ["precision", "recall", "f1-score", "support", "roc_auc", "pr_auc"]
CONFUSED = ["true", "predicted", "count", "rate"]
NOTE_KEYS = ["data_note", "split_note", "auc_note", "calibration_note", "va_note"]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]]


def format_value(value: Any) -> str:
    """The one way a metric is written in a report: floats to 4 decimals, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metric_pointer(path: tuple[str | int, ...]) -> str:
    """The JSON pointer (RFC 6901) of a path into the metrics dict."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def resolve_pointer(metrics: dict[str, Any], pointer: str) -> Any:
    """The value a JSON pointer names in ``metrics``."""
    value: Any = metrics
    for part in pointer.split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def tables(metrics: dict[str, Any]) -> list[Table]:
    """The report's tables, in order, with cells that point into ``metrics``."""
    classes = metrics["classes"]
    summary = [[label, (key,)] for key, label in SUMMARY if key in metrics]
    per_class = [[name, *(("per_class", name, col) for col in PER_CLASS)] for name in classes]
    confused = [
        [("most_confused", i, col) for col in CONFUSED]
        for i in range(len(metrics["most_confused"]))
    ]
    matrix = [
        [name, *(("confusion_matrix", i, j) for j in range(len(classes)))]
        for i, name in enumerate(classes)
    ]
    found = [
        Table("Summary", ["metric", "value"], summary),
        Table("Per class", ["class", *PER_CLASS], per_class),
        Table("Most confused (rate: share of the true class)", CONFUSED, confused),
        Table("Confusion matrix (rows: true, columns: predicted)", ["", *classes], matrix),
    ]
    if "valence_arousal" in metrics:
        columns = ["samples", *VA_METRICS]
        rows = [
            [name, *(("valence_arousal", name, column) for column in columns)]
            for name in VA_DIMENSIONS
        ]
        header = ["dimension", *(VA_LABELS[column] for column in columns)]
        found.insert(1, Table("Valence and arousal", header, rows))
    return found


def _text(metrics: dict[str, Any], cell: Cell) -> str:
    if isinstance(cell, str):
        return cell
    return format_value(resolve_pointer(metrics, metric_pointer(cell)))


def _all_notes(metrics: dict[str, Any], notes: list[str]) -> list[str]:
    return [metrics[key] for key in NOTE_KEYS if key in metrics] + notes


def run_description(metrics: dict[str, Any]) -> str:
    """What ran the model and with which test-time augmentation, e.g. "torch, flip TTA"."""
    mode = tta_mode(metrics.get("tta"))
    return ", ".join(
        [metrics.get("runtime", "torch")] + ([f"{mode} TTA"] if mode != "none" else [])
    )


def _title(metrics: dict[str, Any]) -> str:
    return (
        f"Evaluation of {metrics['model']} ({run_description(metrics)}) on {metrics['data']} "
        f"[{metrics['split']}]"
    )


def render_markdown(metrics: dict[str, Any], plots: list[Plot], notes: list[str]) -> str:
    """Markdown with the tables and links to ``plots/<name>.png``."""
    lines = [f"# {_title(metrics)}", ""]
    for note in _all_notes(metrics, notes):
        lines.append(f"- note: {note}")
    for table in tables(metrics):
        lines += ["", f"## {table.title}", ""]
        if not table.rows:
            lines.append("none")
            continue
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "---|" * len(table.header))
        for row in table.rows:
            cells = (_text(metrics, cell).replace("|", "\\|") for cell in row)
            lines.append("| " + " | ".join(cells) + " |")
    for plot in plots:
        lines += ["", f"## {plot.title}", "", f"![{plot.title}](plots/{plot.name}.png)"]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #1f2328; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; }
td[data-metric] { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
figure { margin: 1em 0 2em; }
.note { color: #9a6700; }
"""
# Counts the images that decoded, for headless checks (e.g. chromium --dump-dom).
_SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter((i) => i.naturalWidth > 0).length;
});
"""


def _html_cell(metrics: dict[str, Any], cell: Cell) -> str:
    if isinstance(cell, str):
        return f"<th>{html.escape(cell)}</th>"
    pointer = html.escape(metric_pointer(cell))
    return f'<td data-metric="{pointer}">{html.escape(_text(metrics, cell))}</td>'


def render_html(metrics: dict[str, Any], plots: list[Plot], notes: list[str]) -> str:
    """One HTML page with no external assets: figures are embedded as PNG data URIs."""
    title = html.escape(_title(metrics))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in _all_notes(metrics, notes)]
    for table in tables(metrics):
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        if not table.rows:
            parts.append("<p>none</p>")
            continue
        parts.append("<table><thead><tr>")
        parts += [f"<th>{html.escape(name)}</th>" for name in table.header]
        parts.append("</tr></thead><tbody>")
        for row in table.rows:
            parts.append("<tr>" + "".join(_html_cell(metrics, cell) for cell in row) + "</tr>")
        parts.append("</tbody></table>")
    for plot in plots:
        data = base64.b64encode(plot.png).decode("ascii")
        caption = html.escape(plot.title)
        parts.append(
            f'<figure id="plot-{plot.name}"><h2>{caption}</h2>'
            f'<img alt="{caption}" src="data:image/png;base64,{data}"></figure>'
        )
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: Path, metrics: dict[str, Any], plots: list[Plot], notes: list[str]
) -> tuple[Path, Path]:
    """Write ``report.md`` (with ``plots/*.png`` beside it) and ``report.html``; their paths."""
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    for plot in plots:
        write_atomic(out_dir / "plots" / f"{plot.name}.png", plot.png)
    markdown, page = out_dir / "report.md", out_dir / "report.html"
    write_atomic(markdown, render_markdown(metrics, plots, notes).encode())
    write_atomic(page, render_html(metrics, plots, notes).encode())
    return markdown, page
