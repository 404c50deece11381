#!/usr/bin/env python
"""Benchmark of ``predict-vlm`` against the localhost stand-in server (``tests/vlm_standin.py``).

1. Throughput: questions/s of :func:`moviefib.vlm.predict_vlm` at concurrency 1 and 8 against a
   stand-in (in its own process, as a server is) that takes a fixed ``--latency`` (300 ms) per reply
   and decodes every JPEG it gets, sharing the cores with the client; frame
   decoding and JPEG encoding are included (from reading the split to writing the submission), on
   synthetic MPEG-4 clips (3 s, 25 fps, 480x270, 3 questions per clip), 8 frames each. Goal at 8:
   >= 0.8 x 8 / latency, over the whole call ("all": start-up included) and from the first reply to
   the last ("steady").
2. Kill -9: ``moviefib predict-vlm`` (a subprocess, concurrency 8) is killed with SIGKILL once half the
   questions are answered, at no chosen moment, then rerun. Counted from the server's log: requests
   for questions whose reply the first run had cached (goal 0) and questions asked by both runs
   without a cached reply (the requests in flight at the kill: goal <= the concurrency).

    python scripts/bench_vlm.py [--questions 480] [--questions-c1 48] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from vlm_standin import StandIn  # noqa: E402  (the stand-in lives with the tests)

PER_CLIP = 3


def synthetic_split(folder: Path, videos: Path, n: int) -> dict[str, str]:
    """A dataset folder with a ``val`` split of ``n`` questions and their clip files; the answers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moviefib.schema import arrow_schema
    from moviefib.video import write_synthetic_video

    words = ["door", "car", "box", "letter", "window", "dog"]
    clips = [f"1001_BENCH_MOVIE_00.{i // 60:02d}.{i % 60:02d}.000-00.{i // 60:02d}.{i % 60:02d}.999"
             for i in range(-(-n // PER_CLIP))]
    (videos / "1001_BENCH_MOVIE").mkdir(parents=True, exist_ok=True)
    for c in clips:
        write_synthetic_video(videos / "1001_BENCH_MOVIE" / f"{c}.avi", 75, size=(480, 270), codec="mpeg4")
    qids = [f"val-{i}" for i in range(n)]
    answers = [words[i % len(words)] for i in range(n)]
    cols = {"question_id": qids, "clip_id": [clips[i // PER_CLIP] for i in range(n)],
            "movie": ["1001_BENCH_MOVIE"] * n, "sentence_id": [f"s{i // PER_CLIP}" for i in range(n)],
            "start_aligned": [0.0] * n, "end_aligned": [3.0] * n, "start_extracted": [0.0] * n,
            "end_extracted": [3.0] * n, "sentence": [f"he opens the {a} slowly" for a in answers],
            "question": ["he opens the _____ slowly"] * n, "answer": answers, "answer_pos": ["NN"] * n,
            "word_index": [3] * n, "char_start": [13] * n, "char_end": [13 + len(a) for a in answers]}
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(cols, schema=arrow_schema()), folder / "data" / "val.parquet")
    return dict(zip(qids, answers))


def standin_process(latency: float, expect_frames: int) -> tuple[subprocess.Popen, str]:
    """A stand-in in its own process, as a real server is; (process, base URL) once it listens."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"import vlm_standin; vlm_standin.serve_forever({port}, {latency!r}, {expect_frames})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT / "tests",
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1).read()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the stand-in did not start")


def throughput(dataset: Path, videos: Path, work: Path, *, concurrency: int, latency: float) -> dict:
    import urllib.request

    from moviefib.vlm import FrameSpec, VLMConfig, predict_vlm

    proc, url = standin_process(latency, 8)
    replies: list[float] = []
    try:
        config = VLMConfig(endpoint=url, model="standin-vl", frames=FrameSpec(n=8), concurrency=concurrency)
        summary = predict_vlm(dataset, split="val", video_root=videos, out=work / f"c{concurrency}.tsv",
                              config=config, on_answer=lambda: replies.append(time.perf_counter()))
        stats = json.loads(urllib.request.urlopen(url.replace("/v1", "/stats")).read())
    finally:
        proc.kill()
        proc.wait()
    if stats["problems"]:
        raise SystemExit(f"the stand-in refused requests: {stats['problems'][:3]}")
    # "all": the whole call (reading the split, importing the client, the first decode included);
    # "steady": from the first reply to the last, the rate a long split runs at.
    steady = (len(replies) - 1) / (replies[-1] - replies[0])
    return {"all": round(summary.questions_per_s, 2), "steady": round(steady, 2), "questions": summary.asked}


def kill_and_rerun(dataset: Path, videos: Path, work: Path, *, n: int, latency: float) -> dict:
    out = work / "killed.tsv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def command(url: str) -> list[str]:
        return [sys.executable, "-m", "moviefib", "predict-vlm", str(dataset), "--split", "val",
                "--video-root", str(videos), "--endpoint", url, "--model", "standin-vl", "--out", str(out),
                "--concurrency", "8", "--no-progress"]

    with StandIn(latency=latency) as first:
        proc = subprocess.Popen(command(first.start()), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while len(first.answered()) < n // 2 and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        asked_first = set(first.requested())
    lines = out.with_name(out.name + ".replies.jsonl").read_bytes().split(b"\n")[:-1]
    cached = {r["question_id"] for r in map(json.loads, lines) if "sent" not in r}  # not the sent marks
    with StandIn(latency=latency) as second:
        rerun = subprocess.run(command(second.start()), env=env, capture_output=True, text=True)
        asked_second = second.requested()
    return {"killed_after_replies": len(cached), "rerun_exit": rerun.returncode,
            "received_replies_requested_again": len(set(asked_second) & cached),
            "in_flight_requests_repeated": len((set(asked_second) & asked_first) - cached),
            "rerun_says_repeated": _noted_repeats(rerun.stdout),
            "rerun_requests": len(asked_second), "questions": n}


def _noted_repeats(stdout: str) -> int:
    """The count of repeated in-flight requests the rerun reports itself (0 when it notes none)."""
    for line in stdout.splitlines():
        if line.startswith("note: ") and "in flight" in line:
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=480, help="questions at concurrency 8 and for kill -9")
    ap.add_argument("--questions-c1", type=int, default=48, help="questions at concurrency 1")
    ap.add_argument("--latency", type=float, default=0.3, help="the stand-in's seconds per reply")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for c, n in ((1, args.questions_c1), (8, args.questions)):
            synthetic_split(tmp / f"ds{c}", tmp / f"videos{c}", n)
            results[f"questions_per_s_at_{c}"] = throughput(tmp / f"ds{c}", tmp / f"videos{c}", tmp,
                                                            concurrency=c, latency=args.latency)
        goal = 0.8 * 8 / args.latency
        results["goal_at_8"] = round(goal, 2)
        results["kill_9"] = kill_and_rerun(tmp / "ds8", tmp / "videos8", tmp, n=args.questions,
                                           latency=args.latency)
    print(json.dumps(results, indent=1))
    k = results["kill_9"]
    ok = (results["questions_per_s_at_8"]["all"] >= goal and k["received_replies_requested_again"] == 0
          and k["in_flight_requests_repeated"] <= 8 and k["rerun_exit"] == 0)
    print("goals met" if ok else "goals NOT met")


if __name__ == "__main__":
    main()
