#!/usr/bin/env python
"""Builder throughput, end to end, on the ActivityNet-Captions sentences: 1 process vs N processes.

    python scripts/bench_build.py [--shared ../shared] [--processes 1 2] [--limit N]

Each run reads the JSON (skip mode: the file has bad segments), tags every sentence with spaCy, builds
the questions (``clean`` mode, top-1000 blank vocabulary) and writes the dataset folder to a temporary
directory; it prints sentences per second of the whole run. Run it on a quiet machine: other processes
on the same cores lower the figures.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from moviefib.questions import BuildOptions, build_dataset, read_activitynet
from moviefib.questions.tagging import Tagger


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    path = args.shared / "data" / "captions" / "activitynet_captions_train.json"
    if not path.is_file():
        print(f"missing {path}", file=sys.stderr)
        return 2
    print(f"cpus available: {len(os.sched_getaffinity(0))}; load average: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    for n in args.processes:
        with tempfile.TemporaryDirectory() as tmp:
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            loaded = read_activitynet(path, errors="skip")
            records = loaded.records[:args.limit] if args.limit else loaded.records
            t_read = time.perf_counter() - t0
            tagger = Tagger(args.model, n_process=n)
            t_load = time.perf_counter() - t0 - t_read
            report = build_dataset(records, Path(tmp) / "anet", BuildOptions(n_process=n), tagger=tagger,
                                   sources=[str(path)], problems=loaded.problems)
            total = time.perf_counter() - t0
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_main = self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
        cpu_kids = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
        nq = sum(s.questions for s in report.splits.values())
        print(f"processes={n}: {len(records)} sentences ({len(loaded.problems)} bad segments skipped) -> "
              f"{nq} questions in {total:.1f} s = {len(records) / total:.0f} sentences/s end to end "
              f"(read {t_read:.1f} s, model load {t_load:.1f} s, tag+build+write {report.seconds:.1f} s = "
              f"{len(records) / report.seconds:.0f} sentences/s); CPU: main process {cpu_main:.1f} s, "
              f"tagging workers {cpu_kids:.1f} s")
        # An upper bound for a machine with the cores to itself: the CPU time spread evenly over the cores
        # (it ignores the serial part after tagging, when only the main process works).
        cores = min(n, len(os.sched_getaffinity(0)))
        bound = max((cpu_main + cpu_kids) / cores, cpu_main if n > 1 else 0.0)
        print(f"  upper bound on an otherwise idle machine (CPU time / cores): {len(records) / bound:.0f} sentences/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
