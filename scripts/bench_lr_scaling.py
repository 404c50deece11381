#!/usr/bin/env python
"""The batch-size rule and zoneout on the real val split (text_only), compared with the evaluator.

The real MovieFIB val questions (``../shared/data/moviefib_val``, 10 movies) are split by movie as in
``scripts/bench_baselines.py``: train on 8, validate on 1005_Signs and 1027_Les_Miserables. Each
configuration of :data:`CONFIGS` is trained for each seed (recipe ``text_only`` with ``--set``
overrides on top), its best checkpoint predicts the val split, and ``compare`` scores every
submission with the evaluator, compares the pairs of :data:`PAIRS` seed by seed (the evaluator's
paired bootstrap by sentence) and prints the tables.

    python scripts/bench_lr_scaling.py run --out runs/lr_scaling --configs b24 b192 --seeds 0 1
    python scripts/bench_lr_scaling.py compare --out runs/lr_scaling
    python scripts/bench_lr_scaling.py zoneout-speed --out runs/zoneout_speed

``zoneout-speed``: training questions/s of text_only (paper sizes, batch 24, synthetic batches of
real-val lengths) without zoneout and with it, plain and with batch norm, timed in alternating blocks
in one process so that a shared machine's load falls on both alike; the median block of each.

Two ``run`` processes may share an ``--out`` folder (each configuration and seed has its own run
folder), e.g. on two cores with ``--set train.threads=1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIB = SHARED / "data/moviefib_val/LSMDC16_annos_val_FIB.csv"
VAL_MOVIES = ("1005_Signs", "1027_Les_Miserables")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from moviefib.fileio import atomic_write  # noqa: E402

ZONEOUT = ("model.zoneout_cell=0.05", "model.zoneout_hidden=0.15")  # the paper's LSTM LM values
CONFIGS = {
    "b24": ("train.batch_size=24",),  # the recipe's (paper's) lr 2e-4
    "b192_linear": ("train.batch_size=192", "train.lr_scaling=linear"),  # lr 1.6e-3
    "b192": ("train.batch_size=192",),  # lr 2e-4 unscaled
    "b192_linear_zoneout": ("train.batch_size=192", "train.lr_scaling=linear", *ZONEOUT),
    "b24_zoneout": ("train.batch_size=24", *ZONEOUT),
}
REFERENCE = "b24"
# The comparisons of ``compare``: (A, B), each seed's run of A paired with that seed's run of B.
PAIRS = (("b192_linear", "b24"), ("b192", "b24"), ("b192_linear", "b192"), ("b192_linear_zoneout", "b192_linear"),
         ("b24_zoneout", "b24"))
# Capped for two shared CPU cores: the paper's schedule (50 epochs, patience 5) takes hours per run.
COMMON = ("train.epochs=15", "train.patience=3", "train.progress=false")


def make_dataset(folder: Path) -> Path:
    """The real val questions as a dataset folder with splits ``train`` (8 movies) and ``val`` (2)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from bench_evaluate import fib_dataset

    if (folder / "data" / "val.parquet").is_file():
        return folder
    # Built aside and renamed into place: two run processes started together may both build it.
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    whole = pq.read_table(fib_dataset(FIB, tmp, "all") / "data" / "all.parquet")
    in_val = pc.is_in(whole.column("movie"), value_set=pa.array(VAL_MOVIES))
    pq.write_table(whole.filter(pc.invert(in_val)), tmp / "data" / "train.parquet")
    pq.write_table(whole.filter(in_val), tmp / "data" / "val.parquet")
    (tmp / "data" / "all.parquet").unlink()
    try:
        tmp.rename(folder)
    except OSError:  # the other process was first
        shutil.rmtree(tmp)
    return folder


def run_one(out: Path, dataset: Path, name: str, seed: int, extra: list[str]) -> dict:
    """Train configuration ``name`` with ``seed``, predict val with its best checkpoint; its figures."""
    from moviefib.train import load_config, predict, train, write_predictions

    run_dir = out / f"{name}_s{seed}"
    overrides = [*COMMON, *CONFIGS[name], *extra, f"train.seed={seed}",
                 f"data.dataset={json.dumps(str(dataset))}", f"train.out_dir={json.dumps(str(run_dir))}"]
    t0 = time.perf_counter()
    res = train(load_config("text_only", overrides))
    minutes = (time.perf_counter() - t0) / 60
    write_predictions(predict(res.best_checkpoint, dataset, "val"), run_dir / "val.tsv")
    figures = {"config": name, "seed": seed, "overrides": overrides, "val_acc": res.best_val_acc,
               "best_epoch": res.best_epoch, "epochs": res.epochs_run, "minutes": minutes,
               "lr": res.metrics["lr"]["lr"],
               "s_per_epoch": sum(h["seconds"] for h in res.metrics["history"]) / res.epochs_run}
    atomic_write(run_dir / "bench.json", json.dumps(figures, indent=2) + "\n")
    print(f"{name} seed {seed}: val acc {res.best_val_acc:.4f} (epoch {res.best_epoch}/{res.epochs_run}, "
          f"{minutes:.1f} min)", flush=True)
    return figures


def compare(out: Path, dataset: Path) -> dict:
    """Every finished run scored by the evaluator, and each pair of :data:`PAIRS` compared per seed
    (paired bootstrap by sentence, exact match)."""
    from moviefib.evaluate import evaluate

    order = list(CONFIGS)
    runs = sorted((json.loads(p.read_text()) for p in out.glob("*_s*/bench.json")),
                  key=lambda r: (order.index(r["config"]), r["seed"]))
    have = {(r["config"], r["seed"]) for r in runs}
    for r in runs:
        ev = evaluate(dataset, [out / f"{r['config']}_s{r['seed']}" / "val.tsv"], split="val", bootstrap=0)
        r["exact"] = ev.submissions[0].summary.accuracy
    pairs = []
    for a, b in PAIRS:
        for seed in sorted({r["seed"] for r in runs}):
            if (a, seed) in have and (b, seed) in have:
                ev = evaluate(dataset, [out / f"{x}_s{seed}" / "val.tsv" for x in (a, b)], split="val",
                              bootstrap=1000)
                c = next(c for c in ev.comparisons if c.metric == "exact")
                pairs.append({"a": a, "b": b, "seed": seed, "difference": c.difference, "low": c.interval.low,
                              "high": c.interval.high, "p_value": c.p_value})
    return {"runs": runs, "pairs": pairs}


def _p(p: float) -> str:
    return "< 0.001" if p == 0 else f"{p:.3f}"  # 0 of 1,000 resamples on the other side of zero


def tables(results: dict) -> str:
    lines = ["| config | seed | lr | val accuracy | best epoch / run | minutes | s/epoch |",
             "|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        lines.append(f"| {r['config']} | {r['seed']} | {r['lr']:g} | {100 * r['exact']:.2f} % | "
                     f"{r['best_epoch']} / {r['epochs']} | {r['minutes']:.1f} | {r['s_per_epoch']:.0f} |")
    lines += ["", "| A vs B | seed | accuracy A - B (points) | 95 % interval | p |", "|---|---|---|---|---|"]
    for c in results["pairs"]:
        lines.append(f"| {c['a']} vs {c['b']} | {c['seed']} | {100 * c['difference']:+.2f} | "
                     f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}] | {_p(c['p_value'])} |")
    return "\n".join(lines)


def zoneout_speed(blocks: int, steps: int, batch: int = 24) -> dict:
    """Questions/s of text_only training steps (forward, backward, Adam) per zoneout setting."""
    import statistics

    import torch

    from moviefib.models import create_model

    g = torch.Generator().manual_seed(0)
    # Real-val-like sides: the words before and after the blank, 1 to 20 each.
    data = {side: torch.randint(1, 4000, (batch, 20), generator=g) for side in ("left", "right")}
    data.update({f"{side}_len": torch.randint(1, 21, (batch,), generator=g) for side in ("left", "right")})
    target = torch.randint(0, 852, (batch,), generator=g)
    settings = {f"{'bn' if bn else 'plain'} zoneout {c:g}/{h:g}": (bn, c, h)
                for bn in (False, True) for c, h in ((0.0, 0.0), (0.05, 0.1))}
    runs = {}
    for name, (bn, c, h) in settings.items():
        torch.manual_seed(0)
        model = create_model("text_only", n_answers=852, vocab_size=4000, batch_norm=bn, zoneout_cell=c,
                             zoneout_hidden=h)
        runs[name] = (model, torch.optim.Adam(model.parameters(), lr=2e-4))
    times = {name: [] for name in runs}
    for _ in range(blocks):
        for name, (model, opt) in runs.items():
            model.train()
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(model(data), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times[name].append(steps * batch / (time.perf_counter() - t0))
    result = {name: statistics.median(qps) for name, qps in times.items()}
    for name, qps in result.items():
        print(f"{name}: {qps:.0f} questions/s", flush=True)
    return {"threads": torch.get_num_threads(), "batch": batch, "questions_per_s": result}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("run", "compare", "zoneout-speed"))
    p.add_argument("--out", type=Path, required=True, help="folder for the dataset, runs and results")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=[REFERENCE])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--blocks", type=int, default=5, help="zoneout-speed: timed blocks per setting")
    p.add_argument("--steps", type=int, default=10, help="zoneout-speed: training steps per block")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a further override for every run (e.g. train.threads=1)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.what == "zoneout-speed":
        args.out.mkdir(parents=True, exist_ok=True)
        speed = zoneout_speed(args.blocks, args.steps)
        atomic_write(args.out / "results.json", json.dumps(speed, indent=2) + "\n")
        return 0
    if not FIB.is_file():
        sys.exit(f"{FIB}: not found (the real val questions live in ../shared)")
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = make_dataset(args.out / "dataset")
    if args.what == "run":
        for name in args.configs:
            for seed in args.seeds:
                run_one(args.out, dataset, name, seed, args.set)
        return 0
    results = compare(args.out, dataset)
    atomic_write(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
