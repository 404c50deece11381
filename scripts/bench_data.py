#!/usr/bin/env python
"""Questions/s of the training data path alone at MovieFIB's scale: resident, lazy, bare index_select.

    python scripts/bench_data.py [--scale 0.1] [--json OUT] [--seconds 20] [--tmp DIR]

Makes synthetic feature stores of the real dimensions in a temporary folder (removed at the end):
95,118 clips (LSMDC's training clips) with durations drawn around 4.5 s (at least 2 s, as LSMDC
extends shorter clips) at 24 fps, a 1024-d 2D stream on every 3rd frame (paper_2d: GoogLeNet pool5) and
a 4096-d 3D stream on 16-frame windows (paper_3d: C3D fc6), values from a random float16 pool; and
296,960 questions (LSMDC's training questions) on them, every clip asked at least once. ``--scale F``
takes a fraction F of both. Then, in batches of 512 in training mode (random stride and start, at most
15 steps, the two streams aligned by time), it times:

* resident: :mod:`moviefib.training.resident` as training reads it (the stores read once into
  memory, load time apart; each batch used before the next, so its buffers are recycled);
* lazy: :class:`moviefib.data.FIBDataset` through a DataLoader reading HDF5, at 0, 1 and 2 workers
  (the best is the figure);
* index_select: a bare ``torch.index_select`` of the rows the resident batches gather, in the same
  run: each stream into a new tensor (the figure), and into a reused buffer (what the resident path
  does while training: a fresh 78 MB batch costs about as much in page faults as its copy).

and prints ``resident / lazy = N.Nx`` and ``resident / index_select = N.NNx``. Each measurement runs
for up to ``--seconds`` (after a first batch that starts workers and warms caches) or one epoch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL_CLIPS, FULL_QUESTIONS = 95_118, 296_960
FPS, STEP_2D, WINDOW_3D = 24.0, 3, 16
DIM_2D, DIM_3D = 1024, 4096
BATCH, MAX_STEPS = 512, 15


def clip_frames(n_clips: int, rng: np.random.Generator) -> np.ndarray:
    """Frames per clip: lognormal durations (median 3.8 s, mean about 4.5 s), 2 to 30 s."""
    seconds = np.clip(rng.lognormal(np.log(3.8), 0.55, n_clips), 2.0, 30.0)
    return np.round(seconds * FPS).astype(np.int64)


def write_streams(folder: Path, frames: np.ndarray, rng: np.random.Generator) -> dict[str, Path]:
    """The 2D and 3D stores of clips of ``frames`` frames: rows taken from a random pool at a random
    offset per clip (distinct enough; the data path never looks at values)."""
    from moviefib.features.store import write_store

    paths = {}
    for name, dim, every, centre in (("2d", DIM_2D, STEP_2D, 0.5), ("3d", DIM_3D, WINDOW_3D, WINDOW_3D / 2)):
        pool = rng.standard_normal((4096, dim), dtype=np.float32).astype(np.float16)

        def items(dim=dim, every=every, centre=centre, pool=pool):
            for k, f in enumerate(frames):
                n = -(-int(f) // every)
                rows = (int(rng.integers(len(pool))) + np.arange(n)) % len(pool)
                yield f"c{k:06d}", pool[rows], (np.arange(n) * every + centre) / FPS

        paths[name] = folder / f"bench_{name}.h5"
        write_store(paths[name], items(), {"preset": f"bench_{name}"})
    return paths


def questions(n_clips: int, n_questions: int, rng: np.random.Generator) -> list:
    """Questions of 3-8 words a side, every clip asked once, the rest on random clips."""
    from moviefib.dataset import QuestionItem

    clips = np.concatenate([np.arange(n_clips), rng.integers(0, n_clips, max(0, n_questions - n_clips))])
    words = [f"w{i}" for i in range(2000)]
    out = []
    for q, c in enumerate(clips[:n_questions]):
        left = tuple(words[i] for i in rng.integers(0, len(words), rng.integers(3, 9)))
        right = tuple(words[i] for i in rng.integers(0, len(words), rng.integers(3, 9)))
        out.append(QuestionItem(f"q{q}", f"c{int(c):06d}", left, right, "w0", int(q % 1000)))
    return out


def timed_batches(it, seconds: float, n_max: int) -> tuple[float, int, list]:
    """Questions/s over the batches of ``it`` after its first, for up to ``seconds`` or ``n_max``."""
    first = next(it)
    seen, t0, kept = 0, time.perf_counter(), [first]
    for b, batch in enumerate(it, start=1):
        seen += len(batch["answer"])
        kept.append(batch)
        if time.perf_counter() - t0 >= seconds or b >= n_max:
            break
    return seen / (time.perf_counter() - t0), seen, kept


def bench_resident(ds, stores, args) -> dict:
    import torch

    from moviefib.data import Collator
    from moviefib.training.loop import SharedPermutation, batches
    from moviefib.training.resident import FeaturePlan, available_memory, make_resident

    cpu = torch.device("cpu")
    nbytes = FeaturePlan.of(stores, [ds]).nbytes
    if nbytes + 2 * 2**30 > available_memory():
        return {"skipped": f"resident copy of {nbytes / 2**30:.1f} GiB does not fit "
                           f"{available_memory() / 2**30:.1f} GiB available"}
    t0 = time.perf_counter()
    make_resident([ds], stores, budget_gib=nbytes / 2**30, device=cpu)
    ds.resident.features.streams(cpu)
    _ = ds.resident.questions
    load = time.perf_counter() - t0
    order = SharedPermutation(len(ds), seed=1)
    # As training reads them: each batch used before the next (its buffers recycled).
    qps, seen, kept = timed_batches(iter(batches(ds, order=order, batch_size=BATCH, workers=0,
                                                 collate=Collator(), seed=1, device=cpu, recycle=True)),
                                    args.seconds, args.max_batches)
    return {"questions_per_s": qps, "questions": seen, "load_s": load, "gib": nbytes / 2**30,
            **bench_index_select(ds, [b["index"].numpy().copy() for b in kept[1:]])}


def bench_index_select(ds, batches_idx: list) -> dict:
    """A bare index_select of each stream's rows of the timed resident batches (rows worked out
    first): into new tensors (``bare``), and into one reused buffer (``bare_reused``)."""
    import torch

    cpu = torch.device("cpu")
    streams = ds.resident.features.streams(cpu)
    rows = [[torch.from_numpy(r.reshape(-1)) for r in ds.resident.rows(i, seed=1, device=cpu)[0]] for i in batches_idx]
    n = sum(len(i) for i in batches_idx)
    t0 = time.perf_counter()
    for rs in rows:
        for st, r in zip(streams, rs):
            st.features.index_select(0, r)
    fresh = n / (time.perf_counter() - t0)
    outs = [torch.empty((len(r), st.features.shape[1]), dtype=torch.float16) for st, r in zip(streams, rows[0])]
    t0 = time.perf_counter()
    for rs in rows:
        for st, r, o in zip(streams, rs, outs):
            torch.index_select(st.features, 0, r, out=o[:len(r)])
    reused = n / (time.perf_counter() - t0)
    return {"bare": {"questions_per_s": fresh, "questions": n}, "bare_reused": {"questions_per_s": reused}}


def bench_lazy(ds, args) -> dict:
    from moviefib.data import Collator
    from moviefib.training.loop import SharedPermutation, batches

    lazy = ds.reseeded(1)
    out = {}
    for workers in args.workers:
        it = iter(batches(lazy, order=SharedPermutation(len(ds), seed=1), batch_size=BATCH, workers=workers,
                          collate=Collator(), seed=1, device=None))
        qps, seen, _ = timed_batches(it, args.seconds, args.max_batches)
        del it
        out[str(workers)] = {"questions_per_s": qps, "questions": seen}
        print(f"lazy, {workers} workers: {qps:9.0f} questions/s ({seen} questions)", flush=True)
    return out


def run(args, folder: Path) -> dict:
    from moviefib.data import FIBDataset, WordVocab
    from moviefib.features.store import open_store
    from moviefib.training.resident import available_memory

    rng = np.random.default_rng(0)
    n_clips, n_q = max(1, round(FULL_CLIPS * args.scale)), max(1, round(FULL_QUESTIONS * args.scale))
    frames = clip_frames(n_clips, rng)
    t0 = time.perf_counter()
    paths = write_streams(folder, frames, rng)
    store_gib = sum(p.stat().st_size for p in paths.values()) / 2**30
    print(f"{n_clips} clips ({frames.mean() / FPS:.2f} s on average), {n_q} questions; stores {store_gib:.2f} GiB "
          f"written in {time.perf_counter() - t0:.0f} s", flush=True)
    items = questions(n_clips, n_q, rng)
    stores = {name: open_store(p) for name, p in paths.items()}
    ds = FIBDataset(items, WordVocab.build(items), stores=stores, max_steps=MAX_STEPS, train=True)
    resident = bench_resident(ds, stores, args)
    if "skipped" in resident:
        print(f"resident: skipped: {resident['skipped']}")
    else:
        print(f"resident: {resident['questions_per_s']:9.0f} questions/s ({resident['questions']} questions; "
              f"{resident['gib']:.2f} GiB loaded in {resident['load_s']:.0f} s)")
        print(f"index_select: {resident['bare']['questions_per_s']:9.0f} questions/s (into a reused buffer: "
              f"{resident['bare_reused']['questions_per_s']:.0f})", flush=True)
    free = available_memory() / 2**30
    print(f"beside the resident copy: {free:.1f} GiB available for the page cache, stores {store_gib:.1f} GiB",
          flush=True)
    lazy = bench_lazy(ds, args)
    return {"scale": args.scale, "clips": n_clips, "questions": n_q, "mean_clip_s": float(frames.mean() / FPS),
            "steps_2d": int(stores["2d"].offsets()[-1]),
            "steps_3d": int(stores["3d"].offsets()[-1]), "store_gib": store_gib,
            "available_gib_beside_resident": free, "batch": BATCH, "resident": resident, "lazy": lazy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the clips and questions (default 1)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--seconds", type=float, default=20.0, help="time per measurement (default 20)")
    ap.add_argument("--max-batches", type=int, default=10**9, help="batches per measurement at most")
    ap.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[0, 1, 2],
                    help="DataLoader workers of the lazy path to try (default 0,1,2)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary stores")
    args = ap.parse_args()
    if not 0 < args.scale <= 1:
        print("--scale must be in (0, 1]", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="bench_data_", dir=args.tmp))
    try:
        fig = run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    best = max(fig["lazy"].values(), key=lambda f: f["questions_per_s"])
    fig["lazy_best"] = best
    res = fig["resident"]
    if "skipped" not in res:
        fig["resident_over_lazy"] = res["questions_per_s"] / best["questions_per_s"]
        fig["resident_over_index_select"] = res["questions_per_s"] / res["bare"]["questions_per_s"]
        print(f"resident / lazy = {fig['resident_over_lazy']:.1f}x")
        fig["resident_over_index_select_reused"] = res["questions_per_s"] / res["bare_reused"]["questions_per_s"]
        print(f"resident / index_select = {fig['resident_over_index_select']:.2f}x "
              f"(/ into a reused buffer: {fig['resident_over_index_select_reused']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
