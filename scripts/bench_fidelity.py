#!/usr/bin/env python
"""Fidelity of the builder to the released MovieFIB questions (both modes, leave-movies-out vocabulary).

    python scripts/bench_fidelity.py [--shared ../shared] [--processes 2] [--top 15]

Builds questions from ``LSMDC16_annos_val.csv`` and compares them with ``LSMDC16_annos_val_FIB.csv`` as
multisets of (clip, sentence, blanked word); prints precision, recall and F1 per mode and the words and
tags that account for the remaining differences. Logic: :mod:`moviefib.questions.fidelity`.
"""

import argparse
import sys
import time
from pathlib import Path

from moviefib.questions import from_descriptions, read_fib_import
from moviefib.questions.fidelity import canonical_rows, leave_movies_out
from moviefib.questions.tagging import Tagger


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--top", type=int, default=15, help="differences to list per kind")
    ap.add_argument("--raw", action="store_true",
                    help="compare the files as they are (no mapping of cut sentences to full ones)")
    args = ap.parse_args()
    folder = args.shared / "data" / "moviefib_val"
    desc, fib = folder / "LSMDC16_annos_val.csv", folder / "LSMDC16_annos_val_FIB.csv"
    if not desc.is_file() or not fib.is_file():
        print(f"missing {desc} or {fib}", file=sys.stderr)
        return 2
    records = from_descriptions(desc).records
    real = read_fib_import(fib).records
    n = len(records)
    if not args.raw:
        records, real, mapped = canonical_rows(records, real)
        print(f"{n - len(records)} description rows are sentences cut by the release's repeated-word bug: not "
              f"built from; {mapped} released rows on them mapped to the full sentence")
    tagger = Tagger(args.model, n_process=args.processes)
    t0 = time.perf_counter()
    unique = list(dict.fromkeys(r.sentence for r in records))
    tags = dict(zip(unique, tagger.tag(unique)))
    print(f"tagger: {tagger.info.model} {tagger.info.version} (spaCy {tagger.info.spacy_version}); "
          f"{len(unique)} sentences tagged in {time.perf_counter() - t0:.1f} s")
    for mode in ("clean", "compat"):
        f = leave_movies_out(records, real, tags, mode)
        print(f"\n{mode}: built {f.built}  released {f.real}  matched {f.matched}  "
              f"P {f.precision:.4f}  R {f.recall:.4f}  F1 {f.f1:.4f}")
        for name, items in (("missed (released, not built)", f.missed), ("extra (built, not released)", f.extra)):
            print(f"  {name}: " + ", ".join(f"{w} {n}" for w, n in items[:args.top]))
        print("  missed by our tag: " + ", ".join(f"{t} {n}" for t, n in f.missed_tags[:10]))
        print("  extra by our tag:  " + ", ".join(f"{t} {n}" for t, n in f.extra_tags[:10]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
