#!/usr/bin/env python
"""The masked-LM model on the demo corpus: ``moviefib demo run --bilm`` in a demo folder, checked
against the goals of issue 15 on the test split:

* bilm_2d3d is the best of the six models overall;
* bilm_2d3d is the best of the six on the visual questions (appearance and motion together).

    python scripts/bench_demo_bilm.py --out DIR --seed 0     # DIR: new, or a demo of the same seed

A folder where ``moviefib demo run --out DIR --seed S`` has finished trains only bilm_2d3d (the rest is
reused). Prints the accuracy table by question type, bilm_2d3d's training time and epochs, and the goals;
writes ``DIR/bench_bilm.json``. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

from bench_demo import print_accuracy, question_counts, visual_accuracy  # noqa: E402

BILM = "bilm_2d3d"


def goals(accuracy: dict[str, dict[str, float]], counts: dict[str, int]) -> list[tuple[str, bool]]:
    visual = {name: visual_accuracy(acc, counts) for name, acc in accuracy.items()}
    best = {"all": max((n for n in accuracy if n != BILM), key=lambda n: accuracy[n]["all"]),
            "visual": max((n for n in visual if n != BILM), key=visual.get)}
    return [(f"{BILM} best overall ({accuracy[BILM]['all']:.1f} vs {best['all']} {accuracy[best['all']]['all']:.1f})",
             accuracy[BILM]["all"] > accuracy[best["all"]]["all"]),
            (f"{BILM} best on visual questions ({visual[BILM]:.1f} vs {best['visual']} "
             f"{visual[best['visual']]:.1f})", visual[BILM] > visual[best["visual"]])]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="demo folder (new, or one of the same --seed to reuse)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="training setting for every model (repeatable)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from moviefib.demo.run import run_demo

    out = Path(args.out)
    result = run_demo(out, seed=args.seed, overrides=args.overrides, device="cpu", bilm=True)
    counts = question_counts(out / "dataset")
    checks = goals(result.accuracy, counts)
    history = json.loads((out / "runs" / BILM / "metrics.json").read_text())["history"]
    seconds = sum(row["seconds"] for row in history)
    print(f"demo seed {args.seed}, weights {result.weights}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} (1 min)")
    print(f"{BILM}: {len(history)} epochs, {seconds:.0f} s of training epochs "
          f"({seconds / len(history):.1f} s/epoch; a reused run's figures are those it was trained with)")
    print_accuracy(result.accuracy, counts)
    print("\ngoals:")
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}")
    (out / "bench_bilm.json").write_text(json.dumps({
        "seed": args.seed, "overrides": args.overrides, "weights": result.weights, "epochs": len(history),
        "epoch_seconds": seconds, "test_accuracy": result.accuracy, "question_counts": counts,
        "goals": {text: ok for text, ok in checks}}, indent=2) + "\n")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
