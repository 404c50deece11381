"""Rendering an :class:`~moviefib.evaluate.api.Evaluation`: terminal table, metrics.json, Markdown, chart.

Every file is written through a temp file renamed into place, so an interrupted run never leaves a
file that looks complete.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import atomic_write
from .errors import ResourceUnavailable

if TYPE_CHECKING:
    from .api import Evaluation

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CHART_FILE = "accuracy_by_pos.png"
PROTOCOL_NOTE = ("The official accuracy counts every question of the split; the FrozenBiLM protocol counts "
                 "the rows FrozenBiLM's code scores (its FIB files read by pandas with the first row as "
                 "header, rows without a blank dropped, answers outside the 1,000 most frequent training "
                 "answers wrong): compare it with FrozenBiLM's published tables, the official one with the "
                 "MovieFIB paper's.")
BREAKDOWN_TITLES = {"pos_group": "answer POS (group)", "answer_pos": "answer POS (Penn tag)",
                    "frequency_band": "answer frequency (rank among training answers)",
                    "movie": "movie"}


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _ci(interval) -> str:
    return "" if interval is None else f"[{100 * interval.low:.2f}, {100 * interval.high:.2f}]"


def _title(name: str) -> str:
    return BREAKDOWN_TITLES.get(name, name.replace("label:", "label "))


def _rows(ev: Evaluation) -> dict[str, list[list[str]]]:
    """Sections of (header row, data rows) shared by the terminal table and the Markdown report."""
    subs = ev.submissions
    sections: dict[str, list[list[str]]] = {}
    main = [["metric", *[s.name for s in subs]]]
    main.append(["accuracy (exact)", *[_pct(s.summary.accuracy) for s in subs]])
    if any(s.intervals for s in subs):
        level = int(round(100 * ev.settings["level"]))
        main.append([f"  {level}% CI by sentence", *[_ci(s.intervals.get("exact")) for s in subs]])
    main.append(["accuracy (normalised)", *[_pct(s.summary.accuracy_normalised) for s in subs]])
    if any(s.intervals for s in subs):
        main.append([f"  {level}% CI by sentence", *[_ci(s.intervals.get("normalised")) for s in subs]])
    if ev.settings.get("lemma"):
        main.append(["accuracy (lemma)", *[_pct(s.summary.accuracy_lemma) for s in subs]])
    for field in ("correct", "wrong", "missing", "invalid"):
        main.append([field, *[str(getattr(s.summary, field)) for s in subs]])
    if ev.protocol is not None:
        main += _protocol_summary(ev)
    sections["summary"] = main
    if ev.protocol is not None:
        sections[f"{ev.protocol.name} protocol"] = _protocol_steps(ev.protocol)
    for name in subs[0].breakdowns:
        rows = [[_title(name), "n", *[s.name for s in subs]]]
        per_sub = [dict((g.group, g.summary) for g in s.breakdowns[name]) for s in subs]
        for g in subs[0].breakdowns[name]:
            rows.append([g.group, str(g.summary.n), *[_pct(p[g.group].accuracy) for p in per_sub]])
        sections[name] = rows
    if ev.comparisons:
        rows = [["paired comparison", "metric", "difference", "CI", "p", "only A right", "only B right"]]
        for c in ev.comparisons:
            rows.append([f"{c.a} - {c.b}", c.metric, f"{100 * c.difference:+.2f} pts",
                         _ci(c.interval), f"{c.p_value:.4f}", str(c.a_only), str(c.b_only)])
        sections["comparison"] = rows
    rows = [["humans", "answers", "skipped", "questions", "human", "human (norm.)",
             *[f"{s.name} (same questions)" for s in subs], "agreement"]]
    for p in ev.published_human:
        label = "text only" if p.mode == "text" else "with video"
        rows.append([f"published, {label}", "-", "-", "-", _pct(p.accuracy), "-", *["-" for _ in subs],
                     "-"])
    for h in ev.humans:
        agree = ("-" if h.agreement is None else
                 f"{_pct(h.agreement.rate)} ({h.agreement.n_pairs} pairs, {h.agreement.n_questions} q.)")
        rows.append([f"measured, {h.mode}", str(h.n_answers), str(h.n_skipped), str(h.n_questions),
                     _pct(h.accuracy), _pct(h.accuracy_normalised),
                     *[_pct(h.model_accuracy[s.name][0]) for s in subs], agree])
    sections["humans"] = rows
    return sections


def _protocol_summary(ev: Evaluation) -> list[list[str]]:
    """The protocol's score beside the official one: accuracy, then the rows it scores."""
    name = ev.protocol.name
    rows = [[f"accuracy (exact), {name} protocol", *[_pct(s.protocol.accuracy) for s in ev.submissions]],
            [f"  questions scored (of {ev.n_questions})", *[str(s.protocol.n) for s in ev.submissions]],
            ["  correct", *[str(s.protocol.correct) for s in ev.submissions]]]
    if any(s.protocol.unanswerable_matches for s in ev.submissions):
        rows.append(["  right, but not a top-1000 training answer",
                     *[str(s.protocol.unanswerable_matches) for s in ev.submissions]])
    return rows


def _protocol_steps(rows) -> list[list[str]]:
    """What the protocol applied: one row per step, then whether the number is comparable."""
    out = [[f"{rows.name} protocol", "applied", "rows", "what"]]
    for step in rows.steps:
        out.append([step.name, "yes" if step.applied else "no", str(step.rows), step.note])
    if rows.n_absent:
        out.append(["absent", "-", str(rows.n_absent),
                    "rows FrozenBiLM scores that are no question of the dataset (skipped at import)"])
    out.append(["comparable with published tables", "yes" if rows.comparable else "no", str(rows.n_rows),
                f"rows FrozenBiLM's code scores; read from {rows.source}"])
    return out


def _header(ev: Evaluation) -> str:
    return (f"MovieFIB evaluation of split {ev.split!r} of {ev.dataset}: {ev.n_questions} questions, "
            f"{ev.n_sentences} sentences, {ev.n_movies} movies")


def format_table(ev: Evaluation) -> str:
    """The terminal report: aligned plain-text tables."""
    out = [_header(ev), ""]
    for rows in _rows(ev).values():
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for j, r in enumerate(rows):
            # Data rows are indented under their section title (the first cell of the header row).
            first = r[0].ljust(widths[0] + 2) if j == 0 else "  " + r[0].ljust(widths[0])
            cells = [first] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
            out.append("  ".join(cells).rstrip())
        out.append("")
    for s in ev.submissions:
        for line in s.validation.describe():
            out.append(line)
    out.append("Published human figures are quoted from the MovieFIB paper, not measured here.")
    if ev.protocol is not None:
        out.append(PROTOCOL_NOTE)
    return "\n".join(out).rstrip() + "\n"


def format_markdown(ev: Evaluation) -> str:
    """The Markdown report: the same tables, fingerprints and settings."""
    out = [f"# {_header(ev)}", ""]
    out.append(f"Normalisation: {ev.settings['normalisation']}. Confidence intervals: percentile "
               f"bootstrap, {ev.settings['bootstrap']} resamples of sentences, seed {ev.settings['seed']}.")
    out.append("")
    for name, rows in _rows(ev).items():
        out.append(f"## {_title(name)}" if name in BREAKDOWN_TITLES or name.startswith("label:")
                   else f"## {name}")
        out.append("")
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * len(rows[0]))
        for r in rows[1:]:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        out.append("")
    out.append("Published human figures are quoted from the MovieFIB paper (Maharaj et al., CVPR 2017), "
               "not measured here.")
    out.append("")
    if ev.protocol is not None:
        out += [PROTOCOL_NOTE, ""]
    problems = [line for s in ev.submissions for line in s.validation.describe()]
    if problems:
        out += ["## Tolerated problems", "", "```", *problems, "```", ""]
    out += ["## Fingerprints (sha256)", ""]
    for path, digest in ev.fingerprints.items():
        out.append(f"- dataset `{path}`: `{digest}`")
    for s in ev.submissions:
        out.append(f"- submission `{s.path}`: `{s.sha256}`")
    if ev.human_file:
        out.append(f"- human answers `{ev.human_file[0]}`: `{ev.human_file[1]}`")
    return "\n".join(out) + "\n"


def _json_safe(obj):
    """NaN (an empty group's accuracy) becomes null: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def metrics_json(ev: Evaluation) -> str:
    return json.dumps(_json_safe(ev.to_dict()), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def chart_png(ev: Evaluation) -> bytes:
    """A bar chart of exact accuracy by answer POS group: submissions, measured humans, published lines."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ResourceUnavailable("the chart needs matplotlib (pip install matplotlib)") from None
    groups = [g.group for g in ev.submissions[0].breakdowns["pos_group"]]
    series = [(s.name, [g.summary.accuracy for g in s.breakdowns["pos_group"]]) for s in ev.submissions]
    for h in ev.humans:
        series.append((f"humans ({h.mode}, measured)",
                       [h.by_pos_group.get(g, (0, float("nan")))[1] for g in groups]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups)) + 3.5, 4.5))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, [100 * v for v in values], width, label=label)
    for p, style in zip(ev.published_human, ("--", ":")):
        ax.axhline(100 * p.accuracy, color="black", linestyle=style, linewidth=1,
                   label=f"humans ({p.mode}, published) {100 * p.accuracy:.1f}%")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"MovieFIB {ev.split}: accuracy by answer POS")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(ev: Evaluation, out_dir: str | os.PathLike, *, chart: bool = True) -> list[Path]:
    """Write metrics.json, report.md and (unless ``chart`` is False) the PNG chart into ``out_dir``."""
    out_dir = Path(out_dir)
    written = [atomic_write(out_dir / METRICS_FILE, metrics_json(ev)),
               atomic_write(out_dir / REPORT_FILE, format_markdown(ev))]
    if chart:
        written.append(atomic_write(out_dir / CHART_FILE, chart_png(ev)))
    return written
