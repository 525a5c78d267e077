"""The fine-tune tab's results panel: base and tuned scores, and the held-out rows answered side by side.

Rendered as HTML with each row's image inlined as a small thumbnail (a data URI), so no server path reaches the page
and nothing needs serving; every text is escaped. The table scrolls sideways inside its box on a phone.
"""

import base64
import html
import io
from pathlib import Path

from PIL import Image

from model.shared import IMAGE_PLACEHOLDER

THUMBNAIL = (120, 72)
SHOWN_ROWS = 16
METRICS = [("exact", "exact match", True), ("cer", "character error rate", False), ("token_f1", "token F1", True)]
STATE_LINES = {
    "none": "No results yet: they are computed when a job finishes (or with the button below).",
    "running": "Answering held-out rows with the base and the tuned model… (earlier results, if any, stay below)",
}
# Answers may be one long word: a cell breaks it anywhere rather than widen the table. A header breaks between words
# only ("expected" is never "expect/ed" on a phone): the rows table lays out automatically, so that a column is at
# least as wide as its header's longest word, and the widths given are what each column gets where there is room.
CELL = "padding:4px 6px;border-bottom:1px solid #8884;vertical-align:top;text-align:left;overflow-wrap:anywhere"
HEAD = CELL.replace("overflow-wrap:anywhere", "overflow-wrap:normal;word-break:normal;hyphens:none")


def thumbnail(path: str) -> str:
    """An `<img>` of the image, shrunk to a thumbnail and inlined; a dash when it cannot be read."""
    try:
        with Image.open(Path(path)) as opened:
            image = opened.convert("RGB")
            image.thumbnail(THUMBNAIL)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (OSError, ValueError):
        return "–"
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="row image" style="max-width:100%;height:auto">'


def _mark(scores: dict) -> str:
    return "✓" if scores.get("exact") == 1.0 else "✗"


def _metrics_table(results: dict) -> str:
    base, tuned = results["metrics"]["base"], results["metrics"]["tuned"]
    rows = []
    for key, label, higher_better in METRICS:
        change = tuned.get(key, 0.0) - base.get(key, 0.0)
        better = change > 0 if higher_better else change < 0
        arrow = "" if abs(change) < 1e-9 else (" ▲" if better else " ▼")
        rows.append(
            f"<tr><td style='{CELL}'>{label}</td><td style='{CELL}'>{base.get(key, 0.0):.3f}</td>"
            f"<td style='{CELL}'>{tuned.get(key, 0.0):.3f}</td><td style='{CELL}'>{change:+.3f}{arrow}</td></tr>"
        )
    head = "".join(f"<th style='{HEAD}'>{name}</th>" for name in ("metric", "base", "tuned", "change"))
    return f"<table id='results-metrics'><tr>{head}</tr>{''.join(rows)}</table>"


def _rows_table(rows: list[dict]) -> str:
    widths = {"image and question": 34, "expected": 22, "base answer": 22, "tuned answer": 22}  # percent
    head = "".join(f"<th style='{HEAD};width:{width}%'>{name}</th>" for name, width in widths.items())
    body = []
    for row in rows[:SHOWN_ROWS]:
        image = thumbnail(row["images"][0]) if row.get("images") else "–"
        question = html.escape(row.get("question", "").replace(IMAGE_PLACEHOLDER, "").strip())
        cells = [
            f"{image}<br><small>{question}</small>",
            html.escape(row.get("expected", "")),
            f"{_mark(row.get('base_scores', {}))} {html.escape(row.get('base', ''))}",
            f"{_mark(row.get('tuned_scores', {}))} {html.escape(row.get('tuned', ''))}",
        ]
        body.append("<tr>" + "".join(f"<td style='{CELL}'>{cell}</td>" for cell in cells) + "</tr>")
    style = "border-collapse:collapse;width:100%;table-layout:auto"
    return f"<table id='results-rows' style='{style}'><tr>{head}</tr>{''.join(body)}</table>"


def results_html(state: dict) -> str:
    """The panel for `JobRunner.results()`: a line on the state, the scores, and the rows side by side."""
    parts = []
    if state["state"] in STATE_LINES:
        parts.append(f"<p>{STATE_LINES[state['state']]}</p>")
    if state["state"] == "failed":
        error = html.escape(state.get("error") or "")
        parts.append(f"<p>⚠️ Comparing the answers failed.</p><pre style='white-space:pre-wrap'>{error}</pre>")
    results = state.get("results")
    if results:
        source = (
            "held-out rows (the job's eval split)"
            if results.get("held_out") == "eval split"
            else "a sample of the training rows (the job had no eval split)"
        )
        parts.append(f"<p><b>Results</b> on {results['rows']} {source}: base model against the tuned one.</p>")
        parts.append(_metrics_table(results))
        parts.append(
            f"<div style='overflow-x:auto;max-width:100%;margin-top:8px'>{_rows_table(state.get('rows', []))}</div>"
        )
    return "<div id='results-panel'>" + "".join(parts) + "</div>"
