#!/usr/bin/env python
"""Benchmark of ``moviefib demo run``: the whole demo on a fresh folder, timed stage by stage.

Prints each stage's seconds, the total, the load average before and after (other processes on the
machine slow every stage down; compare figures only at a similar load), and the test accuracy of the
five baselines overall and by question type, checked against the goals of issue 6:

* every vision baseline beats text_only on the visual questions (appearance + motion) by >= 15 points;
* the 3D baselines (text_3d, text_2d3d, text_2d3d_early) beat text_2d on motion questions;
* the 2D+3D baselines are the best two overall.

    python scripts/bench_demo.py                      # default size, pretrained extractors
    python scripts/bench_demo.py --size small --weights none --out /tmp/demo_small --keep
    python scripts/bench_demo.py --set train.epochs=20

A timing and table are also written to ``<out>/bench.json``. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("all", "text", "appearance", "motion")
VISION = ("text_2d", "text_3d", "text_2d3d", "text_2d3d_early")
WITH_3D = ("text_3d", "text_2d3d", "text_2d3d_early")
FUSED = ("text_2d3d", "text_2d3d_early")


def visual_accuracy(acc: dict[str, float], counts: dict[str, int]) -> float:
    """Accuracy (%) over appearance and motion questions together, weighted by their counts."""
    n = counts["appearance"] + counts["motion"]
    return (acc["appearance"] * counts["appearance"] + acc["motion"] * counts["motion"]) / n


def goals(accuracy: dict[str, dict[str, float]], counts: dict[str, int]) -> list[tuple[str, bool]]:
    """The issue's accuracy goals, each with whether the table meets it."""
    visual = {name: visual_accuracy(acc, counts) for name, acc in accuracy.items()}
    checks = [(f"{name} beats text_only on visual questions by >= 15 points "
               f"({visual[name]:.1f} vs {visual['text_only']:.1f})",
               visual[name] >= visual["text_only"] + 15) for name in VISION]
    checks += [(f"{name} beats text_2d on motion ({accuracy[name]['motion']:.1f} vs "
                f"{accuracy['text_2d']['motion']:.1f})", accuracy[name]["motion"] > accuracy["text_2d"]["motion"])
               for name in WITH_3D]
    others = max(accuracy[n]["all"] for n in accuracy if n not in FUSED)
    checks += [(f"{name} beats every non-fused baseline overall ({accuracy[name]['all']:.1f} vs {others:.1f})",
                accuracy[name]["all"] > others) for name in FUSED]
    return checks


def print_accuracy(accuracy: dict[str, dict[str, float]], counts: dict[str, int]) -> None:
    """The test accuracy table: each model by question type, and on the visual questions."""
    print(f"\ntest accuracy (%), {sum(counts.values())} questions: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"  {'model':16s}" + "".join(f"{k:>12s}" for k in (*KINDS, "visual")))
    for name, acc in accuracy.items():
        print(f"  {name:16s}" + "".join(f"{acc.get(k, float('nan')):12.1f}" for k in KINDS)
              + f"{visual_accuracy(acc, counts):12.1f}")


def question_counts(dataset: Path) -> dict[str, int]:
    from moviefib.dataset import read_table

    counts: dict[str, int] = {}
    for kind in read_table(dataset, "test").column("question_type").to_pylist():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="demo folder (default: a new temporary folder); must not exist")
    p.add_argument("--keep", action="store_true", help="keep the demo folder (a temporary one is removed)")
    p.add_argument("--size", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default="default", choices=("default", "none"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--train-jobs", type=int, default=None, help="baselines trained at once (default: CPU cores)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="training setting for every baseline (repeatable)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from moviefib.demo.run import run_demo

    temp = args.out is None
    out = Path(tempfile.mkdtemp(prefix="moviefib_bench_demo_")) / "demo" if temp else Path(args.out)
    if out.exists():
        p.error(f"{out} exists: the benchmark times a fresh run")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        result = run_demo(out, size=args.size, seed=args.seed, overrides=args.overrides, device="cpu",
                          weights=args.weights, workers=args.workers, train_jobs=args.train_jobs)
        total = time.perf_counter() - t0
        load_after = os.getloadavg()
        counts = question_counts(out / "dataset")
        checks = goals(result.accuracy, counts)
        print(f"demo size {args.size}, seed {args.seed}, weights {result.weights}, "
              f"{os.cpu_count()} CPUs, load average before {load_before[0]:.2f} after {load_after[0]:.2f} "
              f"(1 min), {load_after[1]:.2f} (5 min)")
        for st in result.stages:
            print(f"  {st.name:24s} {st.seconds:8.1f} s  {st.detail}")
        print(f"  {'total':24s} {total:8.1f} s")
        print_accuracy(result.accuracy, counts)
        print("\ngoals:")
        for text, ok in checks:
            print(f"  [{'ok' if ok else 'MISSED'}] {text}")
        (out / "bench.json").write_text(json.dumps({
            "size": args.size, "seed": args.seed, "overrides": args.overrides, "weights": result.weights,
            "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
            "stages": {st.name: st.seconds for st in result.stages}, "total_seconds": total,
            "test_accuracy": result.accuracy, "question_counts": counts,
            "goals": {text: ok for text, ok in checks}}, indent=2) + "\n")
    finally:
        if temp and not args.keep:
            shutil.rmtree(out.parent, ignore_errors=True)
        elif out.exists():
            print(f"demo folder: {out}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
