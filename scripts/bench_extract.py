#!/usr/bin/env python
"""Benchmark feature extraction: (a) decode only, (b) model only, (c) the pipeline, (d) a naive loop.

Same clips, same model, one run. (a) runs the pipeline's DataLoader workers (decode + sample +
preprocess, exactly the part the pipeline gives them: up to uint8 on a GPU, up to float on the CPU)
without a model; (b) runs the model on random float inputs of the preprocessed shape, as many steps as
the clips give, in batches; (c) is ``moviefib.features.pipeline.extract`` to a temporary store; (d)
decodes a clip in the main process, then runs one forward pass per frame/window, nothing overlapped (as
peer tools do). Prints clips/s and the ratios to the goals: on CPU the limit is 1 / (1/decode + 1/model)
(both share the cores), on GPU min(decode, model). ``--normalise-in-workers`` gives (a) and (c) the
arrangement of the CPU on a GPU too (float32 from the workers, the main process's threads left alone):
the figures of the pipeline before it shipped uint8, for comparison on the same machine.

``--memory`` also measures the peak resident memory of decoding + preprocessing a short and a long
synthetic video in a fresh process each (flat = streaming works).

Example: python scripts/bench_extract.py --preset efficientnet_lite0 --weights none --clips 16
Results are also written as JSON with --json PATH.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_clips(folder: Path, n: int, seconds: float, size: tuple[int, int], codec: str) -> list:
    """n synthetic clips in ``folder``; clips of the same settings already there are reused."""
    from moviefib.features.pipeline import ClipSource
    from moviefib.video import write_synthetic_video

    folder.mkdir(parents=True, exist_ok=True)
    ext = ".avi" if codec == "mpeg4" else ".mp4"
    clips = []
    for i in range(n):
        path = folder / f"clip{i:04d}_{size[0]}x{size[1]}_{seconds:g}s_{codec}{ext}"
        if not path.is_file():  # written under a temporary name: a half-written clip is never reused
            write_synthetic_video(path, int(seconds * 25), fps=25, size=size, codec=codec)
        clips.append(ClipSource(path.stem, str(path)))
    return clips


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _what(args):
    """(extractor name, extractor, sampling, decoder short side) of the flags, as ``moviefib extract``."""
    from moviefib.features import pipeline, presets
    from moviefib.features.registry import create_extractor

    if args.preset:
        p = presets.get_preset(args.preset)
        name, options, sampling, short_side = p.extractor, p.options, p.sampling, p.decode_short_side
    else:
        name, options, sampling, short_side = args.extractor, {}, None, None
    if args.sampling:
        sampling = presets.parse_sampling(args.sampling)
    if args.short_side is not None:
        short_side = args.short_side or None
    weights = None if args.weights == "none" else args.weights
    ext = create_extractor(name, weights=weights, device=args.device, **options)
    return name, ext, sampling or pipeline.default_sampling(ext), short_side


def _forward(model, device: str, use_amp: bool):
    import torch

    dev = torch.device(device)

    def forward(x):
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
            return model(x)

    return forward


def _decode_only(clips, ext, sampling, settings) -> tuple[float, int, tuple]:
    """(a): clips/s of decode + preprocess in the pipeline's workers, the steps and a step's shape."""
    from moviefib.features import pipeline

    t = time.perf_counter()
    steps, shape = 0, None
    for b in pipeline.iter_batches(clips, ext, sampling, batch_size=settings.batch_size,
                                   num_workers=settings.num_workers, short_side=settings.short_side,
                                   uint8=settings.normalise_on_device):
        if b["x"] is not None:
            steps += len(b["x"])
            shape = tuple(b["x"].shape[1:])
    return len(clips) / (time.perf_counter() - t), steps, shape


def _model_only(ext, settings, steps: int, shape: tuple, n: int) -> float:
    """(b): clips/s of the model alone on the same number of steps, random inputs on the device."""
    import torch

    batch, model = settings.batch_size, ext.model
    x = torch.randn((batch, *shape), device=settings.device)
    if settings.on_cuda and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
    forward = _forward(model, settings.device, settings.on_cuda and settings.amp)
    forward(x)  # warm-up (cudnn autotune, lazy init)
    _sync(settings.device)
    t = time.perf_counter()
    done = 0
    while done < steps:
        k = min(batch, steps - done)
        forward(x[:k]).float().cpu()
        done += k
    _sync(settings.device)
    return n / (time.perf_counter() - t)


def _naive(clips, ext, sampling, settings) -> float:
    """(d): clips/s of decoding a clip in the main process, then one forward per step."""
    import torch

    from moviefib.video import sample

    forward = _forward(ext.model, settings.device, settings.on_cuda and settings.amp)
    t = time.perf_counter()
    for c in clips:
        xs = [ext.preprocess(torch.from_numpy(f)) for _, f in sample(c.path, sampling, short_side=settings.short_side)]
        for xi in xs:
            xi = xi if ext.kind == "3d" else xi[0]
            forward(xi[None].to(settings.device)).float().cpu()
    _sync(settings.device)
    return len(clips) / (time.perf_counter() - t)


def bench(args) -> dict:
    import torch

    from moviefib.features import pipeline

    name, ext, sampling, short_side = _what(args)
    on_gpu = args.device.startswith("cuda")
    # What extract does by default: on CUDA, uint8 from the workers, normalisation on the device and
    # capped main-process threads; --normalise-in-workers restores the former arrangement.
    legacy = on_gpu and args.normalise_in_workers
    settings = pipeline.ExtractSettings(
        device=args.device, batch_size=args.batch_size, num_workers=args.workers, short_side=short_side,
        amp=not args.no_amp, normalise_on_device=False if legacy else None,
        main_threads=torch.get_num_threads() if legacy else None).resolved(ext)
    tmp = Path(tempfile.mkdtemp(prefix="moviefib-bench-"))
    if args.folder:
        clips = pipeline.clips_from_folder(args.folder)[: args.clips]
    else:
        clips = make_clips(Path(args.clips_dir) if args.clips_dir else tmp / "clips", args.clips,
                           args.seconds, tuple(args.size), args.codec)
    n = len(clips)
    res = {"extractor": name, "preset": args.preset, "device": args.device, "batch_size": settings.batch_size,
           "workers": settings.num_workers, "clips": n, "sampling": str(sampling), "short_side": short_side,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "worker_output": "uint8" if settings.normalise_on_device else "float32",
           "pipeline_main_threads": settings.main_threads or torch.get_num_threads()}
    if on_gpu:
        res["gpu"] = torch.cuda.get_device_name(0)
    res["decode_clips_s"], res["steps"], res["step_shape"] = _decode_only(clips, ext, sampling, settings)
    res["model_clips_s"] = _model_only(ext, settings, res["steps"], res["step_shape"], n)
    # (c) the pipeline
    summary = pipeline.extract(clips, tmp / "out.h5", ext, sampling, settings=settings)
    res["pipeline_clips_s"] = n / summary.seconds
    res["pipeline_failed"] = summary.failed
    res["naive_clips_s"] = _naive(clips[: max(1, min(n, args.naive_clips or n))], ext, sampling, settings)
    shutil.rmtree(tmp, ignore_errors=True)  # the clips (unless --clips-dir) and the store

    a, m = res["decode_clips_s"], res["model_clips_s"]
    res["limit_clips_s"] = min(a, m) if on_gpu else 1.0 / (1.0 / a + 1.0 / m)
    res["pipeline_vs_limit"] = res["pipeline_clips_s"] / res["limit_clips_s"]
    res["pipeline_vs_naive"] = res["pipeline_clips_s"] / res["naive_clips_s"]
    return res


def memprobe(path: str, short_side: int, seconds_label: str) -> None:
    """Child process: decode + preprocess one video through the pipeline's workers, print peak RSS."""
    import resource

    from moviefib.features.pipeline import ClipSource, iter_batches
    from moviefib.video import EveryKth

    class Ext:  # only what iter_batches needs: frames -> float, 2D
        kind = "2d"

        @staticmethod
        def preprocess(frames):
            return frames.permute(0, 3, 1, 2).float() / 255.0

    total = 0.0
    for b in iter_batches([ClipSource("long", path)], Ext, EveryKth(1), batch_size=32, num_workers=1,
                          short_side=short_side):
        if b["x"] is not None:
            total += float(b["x"].mean())
    # ru_maxrss survives execve, so in this child it would report the benchmark parent's peak; the
    # kernel's VmHWM belongs to this process image alone.
    try:
        status = Path("/proc/self/status").read_text()
        self_kb = int(status.split("VmHWM:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The worker is forked from this process: its peak includes the pages it shares with it.
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"video": seconds_label, "peak_rss_main_mb": self_kb / 1024,
                      "peak_rss_worker_mb": child_kb / 1024}))


def memory(args) -> list[dict]:
    from moviefib.video import write_synthetic_video

    tmp = Path(tempfile.mkdtemp(prefix="moviefib-mem-"))
    out = []
    for seconds in args.memory_seconds:
        path = write_synthetic_video(tmp / f"long{seconds}.mp4", int(seconds * 25), size=(640, 360),
                                     codec="mpeg4")
        r = subprocess.run([sys.executable, __file__, "--_memprobe", str(path), str(seconds)],
                           capture_output=True, text=True, check=True)
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--preset", help="feature preset (default efficientnet_lite0)")
    what.add_argument("--extractor", help="registry extractor name")
    ap.add_argument("--sampling", help="override the sampling (every:K, uniform:N, windows:W,...)")
    ap.add_argument("--weights", default="none", help="'none' (random init, default) or 'default' or a path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--short-side", type=int, help="decoder scaling (default: the preset's; 0: off)")
    ap.add_argument("--clips", type=int, default=8, help="number of clips (synthetic unless --folder)")
    ap.add_argument("--naive-clips", type=int, help="run the naive loop on only this many clips")
    ap.add_argument("--folder", help="use video files from this folder instead of synthetic clips")
    ap.add_argument("--clips-dir", help="write the synthetic clips here, reusing those already made "
                                        "(default: a new temporary folder)")
    ap.add_argument("--seconds", type=float, default=2.0, help="synthetic clip length (LSMDC: ~2-5 s)")
    ap.add_argument("--size", type=int, nargs=2, default=(640, 360), metavar=("W", "H"))
    ap.add_argument("--codec", default="mpeg4", help="synthetic clip codec (mpeg4 in .avi like LSMDC)")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--normalise-in-workers", action="store_true",
                    help="on a GPU, the pipeline's former arrangement: float32 from the workers, main "
                         "threads not capped (for a before/after comparison)")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory vs video length")
    ap.add_argument("--memory-seconds", type=float, nargs="+", default=(20, 200))
    ap.add_argument("--skip-bench", action="store_true", help="only the memory measurement")
    ap.add_argument("--json", help="write the results to this JSON file")
    ap.add_argument("--_memprobe", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memprobe:
        memprobe(args._memprobe[0], 224, args._memprobe[1])
        return 0
    logging.basicConfig(level=logging.WARNING)
    if not args.preset and not args.extractor:
        args.preset = "efficientnet_lite0"
    results: dict = {}
    if not args.skip_bench:
        r = bench(args)
        results["bench"] = r
        print(f"{r['extractor']} on {r['device']}{' (' + r['gpu'] + ')' if 'gpu' in r else ''}: "
              f"{r['clips']} clips, {r['steps']} steps of {r['step_shape']}, batch {r['batch_size']}, "
              f"{r['workers']} workers, {r['torch_threads']} torch threads; workers ship "
              f"{r['worker_output']}, pipeline main process {r['pipeline_main_threads']} threads")
        for key, label in (("decode", "(a) decode only"), ("model", "(b) model only"),
                           ("pipeline", "(c) pipeline"), ("naive", "(d) naive loop")):
            print(f"  {label:18s} {r[key + '_clips_s']:8.2f} clips/s")
        kind = "min(a, b)" if r["device"].startswith("cuda") else "1/(1/a + 1/b)"
        print(f"  limit {kind} = {r['limit_clips_s']:.2f} clips/s; pipeline / limit = "
              f"{r['pipeline_vs_limit']:.2f}; pipeline / naive = {r['pipeline_vs_naive']:.2f}")
    if args.memory:
        results["memory"] = memory(args)
        for m in results["memory"]:
            print(f"  memory, {m['video']} s video: peak RSS main {m['peak_rss_main_mb']:.0f} MB, "
                  f"worker {m['peak_rss_worker_mb']:.0f} MB")
    if args.json:
        from moviefib.fileio import atomic_write

        atomic_write(args.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
