#!/usr/bin/env python
"""Load time of a ~300k-question dataset through ``moviefib.load_dataset`` (and plain ``datasets``).

    python scripts/bench_load.py [--shared ../shared] [--copies 18]

Imports the real val questions (17,568), replicates them ``--copies`` times with distinct question ids
into one split, then times: a cold load (empty ``datasets`` cache: Parquet -> Arrow cache), a warm load
(cache hit), an in-memory load (``in_memory=True``, no cache) and a plain ``datasets.load_dataset(folder)``
(through the card's YAML). Offline throughout (HF_DATASETS_OFFLINE=1).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import moviefib
    from moviefib.questions import import_dataset, read_fib_import

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--copies", type=int, default=18)
    args = ap.parse_args()
    fib = args.shared / "data" / "moviefib_val" / "LSMDC16_annos_val_FIB.csv"
    if not fib.is_file():
        print(f"missing {fib}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "big"
        import_dataset(read_fib_import(fib).records, folder)
        table = pq.read_table(folder / "data" / "val.parquet")
        parts = []
        for k in range(args.copies):
            ids = pa.array([f"{q}-r{k}" for q in table.column("question_id").to_pylist()], pa.string())
            parts.append(table.set_column(0, table.schema.field(0), ids))
        big = pa.concat_tables(parts)
        pq.write_table(big, folder / "data" / "val.parquet")
        size = (folder / "data" / "val.parquet").stat().st_size
        print(f"{big.num_rows} questions, Parquet {size / 2**20:.1f} MiB")

        def timed(label, fn):
            t0 = time.perf_counter()
            ds = fn()
            dt = time.perf_counter() - t0
            n = sum(d.num_rows for d in ds.values())
            print(f"{label:<40} {dt:6.2f} s  ({n} rows)")

        t0 = time.perf_counter()
        import datasets

        print(f"{'import datasets':<40} {time.perf_counter() - t0:6.2f} s")
        cache = Path(tmp) / "cache"
        timed("moviefib.load_dataset, cold cache", lambda: moviefib.load_dataset(folder, cache_dir=cache))
        timed("moviefib.load_dataset, warm cache", lambda: moviefib.load_dataset(folder, cache_dir=cache))
        timed("moviefib.load_dataset(in_memory=True)", lambda: moviefib.load_dataset(folder, in_memory=True))
        shutil.rmtree(cache)
        timed("datasets.load_dataset(folder), cold cache",
              lambda: datasets.load_dataset(str(folder), cache_dir=str(cache)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
