#!/usr/bin/env python
"""Benchmark and real-data checks of the evaluator.

1. Speed: validation and scoring of N synthetic predictions (default 350,000, all of MovieFIB) with
   every breakdown and a 1,000-resample bootstrap by sentence, from the files on disk (question table,
   submission) to metrics.json and report.md; interpreter start-up and the chart excluded. Goal: <= 3 s
   on 2 cores.
2. Real questions (``../shared/data/moviefib_val``, skipped when absent): the true answers score 100 %
   (as TSV and as a plain list in FIB order), the majority answer scores its share, and a submission with
   deliberate faults reports each fault.

    python scripts/bench_evaluate.py [--n 350000] [--repeat 3] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared"
PENN = ("NN", "NNS", "VB", "VBZ", "VBG", "VBD", "JJ", "RB", "RP", "PRP")


def write_table(folder: Path, split: str, cols: dict, labels: tuple[str, ...] = ()) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moviefib.schema import arrow_schema

    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "data" / f"{split}.parquet"
    pq.write_table(pa.Table.from_pydict(cols, schema=arrow_schema(labels)), path)
    return path


def synthetic_dataset(folder: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A split of ``n`` questions (about 3 per sentence, 200 movies, Zipf answers over 1,000 words)."""
    rng = np.random.default_rng(seed)
    vocab = [f"word{i}" for i in range(1000)]
    answers = [vocab[i] for i in np.minimum(rng.zipf(1.3, n) - 1, 999)]
    sent = np.sort(rng.integers(0, max(1, n // 3), n))
    movies = [f"{1000 + m:04d}_MOVIE{m}" for m in range(200)]
    movie_of_sent = rng.integers(0, 200, sent.max() + 1)
    qids = [f"val-{i}" for i in range(n)]
    tags = [PENN[i] for i in rng.integers(0, len(PENN), n)]
    cols = {
        "question_id": qids,
        "clip_id": [f"{movies[movie_of_sent[s]]}_00.00.00.000-00.00.02.000" for s in sent],
        "movie": [movies[movie_of_sent[s]] for s in sent],
        "sentence_id": [f"s{s}" for s in sent],
        "start_aligned": np.zeros(n), "end_aligned": np.full(n, 2.0),
        "start_extracted": np.zeros(n), "end_extracted": np.full(n, 2.0),
        "sentence": ["someone walks"] * n, "question": ["someone _____"] * n,
        "answer": answers, "answer_pos": tags,
        "word_index": np.ones(n, np.int32), "char_start": np.full(n, 8, np.int32),
        "char_end": np.full(n, 13, np.int32),
        "question_type": [t[0] for t in tags],
    }
    write_table(folder, "val", cols, ("question_type",))
    (folder / "vocab").mkdir(exist_ok=True)
    counts = Counter(answers)
    (folder / "vocab" / "answer_counts.tsv").write_text(
        "".join(f"{w}\t{c * 10}\n" for w, c in counts.most_common()), encoding="utf-8")
    return qids, answers


def bench_speed(n: int, repeat: int) -> dict:
    from moviefib.evaluate import evaluate, write_submission
    from moviefib.evaluate.report import format_markdown, metrics_json

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        qids, answers = synthetic_dataset(tmp / "ds", n)
        rng = np.random.default_rng(1)
        right = rng.random(n) < 0.45
        preds = {q: (a if ok else "word0") for q, a, ok in zip(qids, answers, right)}
        write_submission(tmp / "a.tsv", preds)
        other = dict(preds)
        for q in qids[::7]:
            other[q] = "word1"
        write_submission(tmp / "b.tsv", other)
        times, cpu_times, pair_times = [], [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            ev = evaluate(tmp / "ds", [tmp / "a.tsv"], split="val", by=["question_type"], bootstrap=1000)
            metrics_json(ev), format_markdown(ev)
            times.append(time.perf_counter() - t0)
            # CPU time of this process: less distorted than wall time on a machine shared with others.
            cpu_times.append(time.process_time() - c0)
            t0 = time.perf_counter()
            ev2 = evaluate(tmp / "ds", [tmp / "a.tsv", tmp / "b.tsv"], split="val", bootstrap=1000)
            pair_times.append(time.perf_counter() - t0)
        return {"questions": n, "sentences": ev.n_sentences, "accuracy": ev.submissions[0].summary.accuracy,
                "ci": [ev.submissions[0].intervals["exact"].low, ev.submissions[0].intervals["exact"].high],
                "seconds_one_submission": min(times), "seconds_all_runs": times,
                "cpu_seconds_one_submission": min(cpu_times),
                "seconds_two_submissions_paired": min(pair_times),
                "paired_difference": ev2.comparisons[0].difference}


def fib_dataset(fib_path: Path, folder: Path, split: str = "val") -> Path:
    """A dataset folder holding the rows of an official FIB file as questions in the declared schema,
    ids ``<split>-<row>`` as the builder's import writes them (answer_pos left null: no tagger here)."""
    from moviefib.formats import read_fib

    rows = read_fib(fib_path).rows
    n = len(rows)
    cols = {
        "question_id": [f"{split}-{i}" for i in range(n)],
        "clip_id": [r.clip_id for r in rows], "movie": [r.movie for r in rows],
        "sentence_id": [f"{r.clip_id}|{r.sentence}" for r in rows],
        "start_aligned": [r.start_aligned for r in rows], "end_aligned": [r.end_aligned for r in rows],
        "start_extracted": [r.start_extracted for r in rows],
        "end_extracted": [r.end_extracted for r in rows],
        "sentence": [r.sentence for r in rows], "question": [r.fill_in for r in rows],
        "answer": [r.blank for r in rows], "answer_pos": [None] * n,
        "word_index": [len(r.fill_in[:r.fill_in.index("_____")].split()) for r in rows],
        "char_start": [r.fill_in.index("_____") for r in rows],
        "char_end": [r.fill_in.index("_____") + len(r.blank) for r in rows],
    }
    write_table(folder, split, cols)
    return folder


def real_val_checks(shared: Path, tmp: Path) -> dict:
    """The checks on the real val questions; returns the figures (raises AssertionError on a failure)."""
    from moviefib.evaluate import SubmissionInvalid, evaluate, load_key, write_submission

    fib = shared / "data" / "moviefib_val" / "LSMDC16_annos_val_FIB.csv"
    folder = fib_dataset(fib, tmp / "val_ds")
    key = load_key(folder, "val")
    out: dict = {"questions": len(key)}

    truth = dict(zip(key.question_ids, key.answers))
    write_submission(tmp / "truth.tsv", truth)
    ev = evaluate(folder, tmp / "truth.tsv", bootstrap=200)
    assert ev.submissions[0].summary.accuracy == 1.0, ev.submissions[0].summary
    out["true_answers_accuracy"] = ev.submissions[0].summary.accuracy
    out["sentences"] = ev.n_sentences
    out["movies"] = ev.n_movies

    (tmp / "truth.txt").write_text("".join(a + "\n" for a in key.answers), encoding="utf-8")
    ev = evaluate(folder, tmp / "truth.txt", order_of=fib, bootstrap=0)
    assert ev.submissions[0].summary.accuracy == 1.0
    out["true_answers_in_fib_order_accuracy"] = 1.0

    word, count = Counter(key.answers).most_common(1)[0]
    write_submission(tmp / "majority.tsv", {q: word for q in key.question_ids})
    ev = evaluate(folder, tmp / "majority.tsv", bootstrap=1000)
    acc = ev.submissions[0].summary.accuracy
    assert acc == count / len(key), (acc, count)
    iv = ev.submissions[0].intervals["exact"]
    out["majority"] = {"answer": word, "share": count / len(key), "accuracy": acc, "ci": [iv.low, iv.high]}

    faulty = dict(truth)
    ids = key.question_ids
    for q in ids[:10]:
        del faulty[q]                                   # 10 missing
    faulty[ids[10]] = ""                                # 1 empty
    faulty[ids[11]] = "the man"                         # 1 multi-word
    faulty["val-999999"] = "her"                        # 1 unknown id
    lines = [f"{q}\t{a}" for q, a in faulty.items()]
    lines += [f"{ids[12]}\t{truth[ids[12]]}", f"{ids[13]}\tzebra"]  # duplicate same, conflicting
    lines.insert(100, "val-12\ttoo\tmany")                          # wrong columns
    (tmp / "faulty.tsv").write_text("question_id\tanswer\n" + "\n".join(lines) + "\n", encoding="utf-8")
    expected = {"missing": 10, "empty_answer": 1, "multi_word": 1, "unknown_id": 1, "duplicate_same": 1,
                "duplicate_conflict": 1, "columns": 1}
    try:
        evaluate(folder, tmp / "faulty.tsv", bootstrap=0)
    except SubmissionInvalid as exc:
        report, = exc.reports
        assert report.counts == expected, report.counts
        out["faulty_reported"] = dict(report.counts)
        out["faulty_report_lines"] = report.describe()
    else:
        raise AssertionError("the faulty submission was accepted")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=350_000, help="synthetic predictions (default 350000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared/ folder")
    args = parser.parse_args(argv)
    speed = bench_speed(args.n, args.repeat)
    print(f"speed: {speed['questions']} predictions, {speed['sentences']} sentences, all breakdowns, "
          f"1000-resample bootstrap: {speed['seconds_one_submission']:.2f} s best of {args.repeat} "
          f"(runs {', '.join(f'{t:.2f}' for t in speed['seconds_all_runs'])}; CPU time "
          f"{speed['cpu_seconds_one_submission']:.2f} s); two submissions with the "
          f"paired comparison: {speed['seconds_two_submissions_paired']:.2f} s; goal <= 3 s")
    if (args.shared / "data" / "moviefib_val").is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            real = real_val_checks(args.shared, Path(tmp))
        maj = real["majority"]
        print(f"real val: {real['questions']} questions, {real['sentences']} sentences, {real['movies']} "
              f"movies; true answers 100% (TSV and FIB-order list); majority answer {maj['answer']!r} "
              f"scores {100 * maj['accuracy']:.2f}% = its share, 95% CI by sentence "
              f"[{100 * maj['ci'][0]:.2f}, {100 * maj['ci'][1]:.2f}]")
        print("faulty submission, each fault reported:")
        for line in real["faulty_report_lines"]:
            print("  " + line)
        speed["real_val"] = {k: v for k, v in real.items() if k != "faulty_report_lines"}
    else:
        print(f"real val checks skipped: {args.shared / 'data' / 'moviefib_val'} absent")
    print(json.dumps(speed, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
