#!/usr/bin/env python
"""Seconds per training epoch at the full MovieFIB size, on synthetic features of the real sizes.

Writes two feature stores (``paper_2d``: 1024-d, 32 steps per 4 s clip; ``paper_3d``: 4096-d, 6 steps)
for ``--clips`` clips, 297k training questions spread over them (a clip's read costs the same whether
it is shared or not) and a small val split, then for each phase trains ``text_only`` / ``text_2d3d``
for a bounded number of batches through the real pipeline (stores -> FIBDataset -> DataLoader workers
-> model) and extrapolates to the 297k questions. A data-only phase times the DataLoader alone, so
one can tell whether loading is the limit. Phase start/end times go to ``phases.json`` for matching
with the ``nvidia-smi`` samples taken by ``baselines.sh``.

    python scripts/gpu/bench_epoch.py --out OUT [--device cuda] [--clips 4000] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

N_TRAIN = 296_960  # MovieFIB training questions


def make_data(out: Path, clips: int, n_train: int, n_val: int):
    import numpy as np
    import pyarrow as pa

    from moviefib.features.store import write_store

    rng = np.random.default_rng(0)
    ids = [f"0001_SYNTH_{i // 3600:02d}.{i // 60 % 60:02d}.{i % 60:02d}.000-{i // 3600:02d}.{i // 60 % 60:02d}."
           f"{i % 60:02d}.900" for i in range(clips)]
    for preset, dim, steps in (("paper_2d", 1024, 32), ("paper_3d", 4096, 6)):
        block = rng.standard_normal((64, steps, dim)).astype(np.float16)  # reused: generation is not the point
        write_store(out / f"{preset}.h5",
                    ((c, block[i % 64], (np.arange(steps) + 0.5) * 4.0 / steps) for i, c in enumerate(ids)),
                    {"preset": preset, "synthetic": True})
    vocab = np.array([f"w{i}" for i in range(20_000)])
    answers = np.array([f"a{i}" for i in range(1000)])

    def table(n, seed):
        r = np.random.default_rng(seed)
        left, right = r.integers(0, len(vocab), (n, 6)), r.integers(0, len(vocab), (n, 5))
        qs = [" ".join([*vocab[left[i]], "_____", *vocab[right[i]]]) for i in range(n)]
        return pa.table({"question_id": [f"q{seed}-{i}" for i in range(n)],
                         "clip_id": [ids[i % clips] for i in range(n)], "question": qs,
                         "answer": list(answers[r.zipf(1.3, n) % 1000])})

    return {"train": table(n_train, 1), "val": table(n_val, 2)}


# A phase that fails (CUDA out of memory, a CUDA error: RuntimeError; a refused setting: ValueError; a full
# disk: OSError) must not lose the other phases' figures.
PHASE_ERRORS = (RuntimeError, ValueError, OSError)


def _runs(big: int) -> list[tuple]:
    """The timed phases: key, model, batch, batch_norm, batches timed, amp."""
    return [
        ("text_2d3d_b24", "text_2d3d", 24, False, 1500, True),
        ("text_2d3d_b24_bn", "text_2d3d", 24, True, 300, True),
        (f"text_2d3d_b{big}", "text_2d3d", big, False, 120, True),
        (f"text_2d3d_b{big}_fp32", "text_2d3d", big, False, 80, False),
        ("text_only_b24", "text_only", 24, False, 1500, True),
        (f"text_only_b{big}", "text_only", big, False, 120, True),
    ]


def timed_run(args, tables: dict, key: str, name: str, batch: int, bn: bool, batches: int, amp: bool) -> dict:
    """One phase: ``name`` trained for ``batches`` batches through the real pipeline."""
    from moviefib.train import load_config, train

    config = load_config(name, [
        f"features.dir={json.dumps(str(args.out / 'features'))}", f"train.device={json.dumps(args.device)}",
        f"train.out_dir={json.dumps(str(args.out / 'runs' / key))}", "train.epochs=1",
        f"train.batch_size={batch}", f"model.batch_norm={'true' if bn else 'false'}",
        f"train.max_batches={batches}", f"train.amp={'true' if amp else 'false'}", "train.progress=false",
        f"data.num_workers={args.workers}", "train.eval_batch_size=1024",
        f"train.lr={2e-4 * (batch / 24) ** 0.5}"])
    h = train(config, tables=tables).metrics["history"][0]
    return {"model": name, "batch": batch, "batch_norm": bn, "amp": amp, "batches": batches,
            "questions_per_s": h["questions_per_s"], "s_per_epoch": N_TRAIN / h["questions_per_s"]}


def data_only(args, tables: dict) -> dict:
    """Data loading alone, at the large batch: the rate the model must not exceed for loading to matter."""
    import torch

    from moviefib.data import Collator, FIBDataset, open_stream_stores
    from moviefib.train import load_config, prepare_splits

    config = load_config("text_2d3d", [f"features.dir={json.dumps(str(args.out / 'features'))}"])
    _, words, train_view, _ = prepare_splits(config, tables)
    stores = open_stream_stores(("2d", "3d"), config.features.presets(), config.features.dir)
    ds = FIBDataset(train_view, words, stores=stores, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.large_batch, shuffle=True, num_workers=args.workers,
                                         collate_fn=Collator(), prefetch_factor=4 if args.workers > 0 else None,
                                         pin_memory=True)
    limit, n, t = max(2, int(150 * args.scale)), 0, None
    for b, batch in enumerate(loader):
        if b == 5:
            t, n = time.perf_counter(), 0  # skip the worker start-up
        n += len(batch["answer"])
        if b >= limit:
            break
    return {"batch": args.large_batch, "workers": args.workers, "questions_per_s": n / (time.perf_counter() - t)}


def _arguments():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--clips", type=int, default=4000)
    p.add_argument("--scale", type=float, default=1.0, help="scale the timed batches (0.01 for a CPU smoke run)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--questions", type=int, default=N_TRAIN, help="training questions generated (smoke runs: fewer)")
    p.add_argument("--large-batch", type=int, default=512)
    return p.parse_args()


def main() -> int:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from moviefib.fileio import atomic_write

    args.out.mkdir(parents=True, exist_ok=True)

    def save(results: dict, phases: list) -> None:
        for name, obj in (("phases.json", phases), ("results.json", results)):
            atomic_write(args.out / name, json.dumps(obj, indent=2) + "\n")
    t0 = time.time()
    tables = make_data(args.out / "features", args.clips, args.questions, 2000)
    phases = [{"name": "generate", "start": t0, "end": time.time()}]
    results: dict = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
                     "torch": torch.__version__, "n_train": N_TRAIN, "clips": args.clips, "runs": {}}
    for key, name, batch, bn, batches, amp in _runs(args.large_batch):
        start = time.time()
        try:
            results["runs"][key] = timed_run(args, tables, key, name, batch, bn, max(2, int(batches * args.scale)),
                                             amp)
        except PHASE_ERRORS as exc:
            results["runs"][key] = {"error": f"{exc.__class__.__name__}: {exc}",
                                    "traceback": traceback.format_exc()[-2000:]}
        phases.append({"name": key, "start": start, "end": time.time()})
        logging.info("%s: %s", key, {k: v for k, v in results["runs"][key].items() if k != "traceback"})
        save(results, phases)  # after every phase: a time-out keeps the figures so far
    start = time.time()
    try:
        results["runs"]["data_only"] = data_only(args, tables)
    except PHASE_ERRORS as exc:
        results["runs"]["data_only"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    phases.append({"name": "data_only", "start": start, "end": time.time()})
    save(results, phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
