#!/usr/bin/env python
"""Fill the results table of ``baselines/README.md`` from the runs' saved ``metrics.json`` files.

    python scripts/results_table.py RUN_DIR [RUN_DIR ...] [--readme baselines/README.md] [--title TEXT]

Each RUN_DIR is a training run folder (with metrics.json) or a folder of such runs (e.g.
``runs/bench_real_val``). The table replaces what lies between the ``<!-- results:start -->`` and
``<!-- results:end -->`` markers of the README; with ``--check`` nothing is written and the exit status
says whether the README already holds this table. Numbers are never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = ("majority", "context_lookup", "text_only", "minilm", "text_2d", "text_3d", "text_2d3d", "text_2d3d_early",
         "bilm_text", "bilm_2d", "bilm_2d3d")


def find_metrics(paths: list[Path]) -> list[dict]:
    found = []
    for p in paths:
        files = [p / "metrics.json"] if (p / "metrics.json").is_file() else sorted(p.glob("*/metrics.json"))
        if not files:
            raise SystemExit(f"{p}: no metrics.json in it or in its sub-folders")
        for f in files:
            m = json.loads(f.read_text())
            m["_path"] = str(f)
            found.append(m)
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(found, key=lambda m: (rank.get(m["model"], len(rank)), m["model"], m["_path"]))


def _fmt_settings(m: dict) -> str:
    cfg = m["config"]
    model = {k: v for k, v in cfg["model"].items() if k != "name"}
    keys = ("lm", "mode", "emb_dim", "hidden", "dropout", "batch_norm", "freeze_encoder", "freeze_embeddings")
    parts = [f"{k}={model[k]}" for k in keys if k in model]
    if m["model"] not in ("majority", "context_lookup"):
        t = cfg["train"]
        parts += [f"batch={t['batch_size']}", f"lr={t['lr']:g}"]
    if "parameters" in m:  # runs since the masked-LM models: how much of the model trains
        parts.append(f"trainable {m['parameters']['trainable']:,} of {m['parameters']['total']:,} parameters")
    if "zero_shot" in m:
        parts.append("zero-shot (no training)")
    return ", ".join(parts) or "—"


def table(metrics: list[dict]) -> str:
    lines = ["| model | run | val accuracy | best epoch / run | train / val questions | answers (OOV on val) | "
             "train s/epoch | settings |",
             "|---|---|---|---|---|---|---|---|"]
    for m in metrics:
        hist = m.get("history", [])
        secs = [h["seconds"] for h in hist if h.get("seconds") and "train_loss" in h]
        s_epoch = f"{sum(secs) / len(secs):.0f}" if secs else "—"
        lines.append(
            f"| {m['model']} | {Path(m['_path']).parent.name} | {100 * m['best_val_acc']:.2f} % | "
            f"{m['best_epoch']} / {len(hist)} | "
            f"{m['n_train']:,} / {m['n_val']:,} | {m['answer_vocab_size']} ({100 * m['val_oov_rate']:.1f} %) | "
            f"{s_epoch} | {_fmt_settings(m)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "baselines" / "README.md")
    p.add_argument("--title", default="", help="a line above the table (data, machine)")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when the README differs")
    args = p.parse_args()
    body = (args.title + "\n\n" if args.title else "") + table(find_metrics(args.runs))
    text = args.readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        sys.exit(f"{args.readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{body}\n{END}{tail}"
    if args.check:
        return 0 if new == text else 1
    fd, tmp = tempfile.mkstemp(dir=args.readme.parent, prefix=f".{args.readme.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(new)
    os.replace(tmp, args.readme)
    print(f"wrote {len(body.splitlines())} lines into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
