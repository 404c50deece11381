#!/usr/bin/env python
"""Benchmarks of the baselines.

``accuracy``: on the real MovieFIB val questions (``../shared/data/moviefib_val``) split by movie:
train on the 8 movies other than 1005_Signs and 1027_Les_Miserables, validate on those 2; accuracy of
majority, context_lookup, text_only and minilm (the packaged recipes, overridable with --set).

``throughput``: training questions/s of text_only and text_2d3d at paper settings on this machine's
CPU, on synthetic features of the real sizes (1024-d 2D, 4096-d 3D).

Results go to ``--out`` as JSON (``scripts/results_table.py`` reads the runs' metrics.json).

    python scripts/bench_baselines.py accuracy --out runs/bench_real_val
    python scripts/bench_baselines.py throughput --out runs/bench_throughput
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VAL_MOVIES = ("1005_Signs", "1027_Les_Miserables")
sys.path.insert(0, str(ROOT))

from moviefib.fileio import atomic_write  # noqa: E402


def real_val_tables(fib_file: Path) -> dict:
    """``{"train", "val"}`` question tables (pyarrow) of the real val FIB file, split by movie."""
    import pyarrow as pa

    from moviefib.formats import read_fib

    rows = read_fib(fib_file).rows
    cols = {"train": {k: [] for k in ("question_id", "clip_id", "question", "answer")},
            "val": {k: [] for k in ("question_id", "clip_id", "question", "answer")}}
    for i, r in enumerate(rows):
        part = cols["val" if r.movie in VAL_MOVIES else "train"]
        part["question_id"].append(f"val-{i}")
        part["clip_id"].append(r.clip_id)
        part["question"].append(r.fill_in)
        part["answer"].append(r.blank)
    return {k: pa.table(v) for k, v in cols.items()}


def bench_accuracy(args) -> dict:
    from moviefib.train import load_config, train

    fib = SHARED / "data/moviefib_val/LSMDC16_annos_val_FIB.csv"
    if not fib.is_file():
        sys.exit(f"{fib}: not found (the real val questions live in ../shared)")
    tables = real_val_tables(fib)
    results = {"split": {"train_movies": "8 others", "val_movies": list(VAL_MOVIES),
                         "n_train": tables["train"].num_rows, "n_val": tables["val"].num_rows}}
    for name in args.models:
        config = load_config(name, [*args.set, f"train.out_dir={json.dumps(str(Path(args.out) / name))}"])
        t0 = time.perf_counter()
        res = train(config, tables=tables)
        results[name] = {"val_acc": res.best_val_acc, "best_epoch": res.best_epoch, "epochs": res.epochs_run,
                         "seconds": time.perf_counter() - t0}
        print(f"{name}: val acc {res.best_val_acc:.4f} (epoch {res.best_epoch}, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return results


def bench_throughput(args) -> dict:
    import numpy as np
    import pyarrow as pa

    from moviefib.features.store import write_store
    from moviefib.train import load_config, train

    rng = np.random.default_rng(0)
    n_clips, per_clip = 200, 3
    clips = [f"0001_SYNTH_00.00.{i // 1000:02d}.{i % 1000:03d}-00.00.{i // 1000 + 4:02d}.000" for i in range(n_clips)]
    words = [f"w{i}" for i in range(2000)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        fdir = Path(tmp)
        # 4 s clips: 2D every 3rd frame at 24 fps (32 steps), 3D on 16-frame windows (6 steps).
        for preset, dim, steps in (("paper_2d", 1024, 32), ("paper_3d", 4096, 6)):
            write_store(fdir / f"{preset}.h5",
                        ((c, rng.standard_normal((steps, dim), dtype=np.float32),
                          (np.arange(steps) + 0.5) * 4.0 / steps) for c in clips),
                        {"preset": preset, "synthetic": True})
        n = n_clips * per_clip

        def table(seed):
            r = np.random.default_rng(seed)
            qs = [" ".join([*r.choice(words, 5), "_____", *r.choice(words, 5)]) for _ in range(n)]
            return pa.table({"question_id": [f"q{seed}-{i}" for i in range(n)],
                             "clip_id": [clips[i // per_clip] for i in range(n)],
                             "question": qs, "answer": list(r.choice(words[:1000], n))})

        tables = {"train": table(1), "val": table(2)}
        for name in ("text_only", "text_2d3d"):
            config = load_config(name, [
                *args.set, f"features.dir={json.dumps(str(fdir))}", "train.epochs=1", "train.progress=false",
                f"train.max_batches={args.batches}", f"train.out_dir={json.dumps(str(fdir / name))}"])
            res = train(config, tables=tables)
            h = res.metrics["history"][0]
            results[name] = {"questions_per_s": h["questions_per_s"], "batch_size": config.train.batch_size,
                             "batch_norm": config.model.settings.batch_norm, "batches": args.batches}
            print(f"{name}: {h['questions_per_s']:.0f} questions/s (batch {config.train.batch_size}, "
                  f"batch_norm={results[name]['batch_norm']})", flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("accuracy", "throughput"))
    p.add_argument("--out", required=True, help="folder for the runs and results.json")
    p.add_argument("--models", nargs="+", default=["majority", "context_lookup", "text_only", "minilm"])
    p.add_argument("--batches", type=int, default=40, help="throughput: batches timed per model")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe key for every model")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = bench_accuracy(args) if args.what == "accuracy" else bench_throughput(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
