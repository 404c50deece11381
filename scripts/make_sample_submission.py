#!/usr/bin/env python
"""Write the evaluator's sample submission and its expected metrics (``moviefib/evaluate/sample/``).

The sample is a submission for the ``val`` split of the tiny synthetic dataset that the test fixture
``tiny_dataset`` (tests/conftest.py) builds. It mixes correct answers, answers that only match after
normalisation ("Sister." for ``sister``) and wrong ones, so that every metric is exercised.
``tests/test_evaluate_sample.py`` re-evaluates it and compares with the expected metrics; rerun this
script (it builds the tiny dataset the same way the fixture does) when the builder's output changes:

    python scripts/make_sample_submission.py            # build the tiny dataset in a temp dir
    python scripts/make_sample_submission.py --dataset DIR
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "moviefib" / "evaluate" / "sample"
SUBMISSION = "submission_val.tsv"
EXPECTED = "expected_metrics_val.json"
BOOTSTRAP, SEED = 1000, 0


def sample_answers(question_ids: list[str], answers: list[str]) -> dict[str, str]:
    """Deterministic answers: every 4th wrong (the next question's answer), every 5th in upper case
    with a period (normalised match only), the rest correct."""
    out = {}
    order = sorted(range(len(question_ids)), key=lambda i: question_ids[i])
    for rank, i in enumerate(order):
        truth = answers[i]
        if rank % 4 == 3:
            other = answers[order[(rank + 1) % len(order)]]
            out[question_ids[i]] = other if other != truth else "nothing"
        elif rank % 5 == 4:
            out[question_ids[i]] = truth.capitalize() + "."
        else:
            out[question_ids[i]] = truth
    return dict(sorted(out.items()))


def comparable(metrics: dict) -> dict:
    """The parts of metrics.json that do not depend on where files are or on Parquet encoder bytes."""
    ds = {k: v for k, v in metrics["dataset"].items() if k not in ("path", "sha256")}
    subs = []
    for s in metrics["submissions"]:
        s = {k: v for k, v in s.items() if k != "path"}
        s["validation"] = {k: v for k, v in s["validation"].items() if k != "path"}
        subs.append(s)
    return {"dataset": ds, "settings": metrics["settings"], "submissions": subs}


def expected_metrics(dataset: Path, submission: Path) -> dict:
    import json

    from moviefib.evaluate import evaluate
    from moviefib.evaluate.report import metrics_json

    ev = evaluate(dataset, [submission], split="val", by=["question_type"], bootstrap=BOOTSTRAP, seed=SEED)
    return comparable(json.loads(metrics_json(ev)))


def build_tiny(folder: Path) -> Path:
    """The tiny dataset, built as tests/conftest.py's ``tiny_dataset`` fixture builds it."""
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "tests"))
    import conftest

    from moviefib.formats import movie_of
    from moviefib.questions import BuildOptions, VocabSpec, build_dataset, from_descriptions

    desc = conftest.write_tiny_descriptions(folder / "tiny_annos.csv")
    loaded = from_descriptions(desc, split="train")
    split_of = {m: s for s, movies in conftest.TINY_MOVIES.items() for m in movies}
    records = [replace(r, split=split_of[movie_of(r.clip_id)]) for r in loaded.records]
    out = folder / "tiny_fib"
    build_dataset(records, out, BuildOptions(vocab=VocabSpec(top_k=None, split="train")),
                  label_fn=conftest.question_type, sources=[str(desc)], name="tiny MovieFIB test set")
    return out


def main(argv=None) -> int:
    import json

    from moviefib.evaluate.key import load_key
    from moviefib.evaluate.submission import write_submission

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="the tiny dataset folder (default: build it)")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help=f"default: {SAMPLE_DIR}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or build_tiny(Path(tmp))
        key = load_key(dataset, "val")
        sub = write_submission(args.out / SUBMISSION, sample_answers(key.question_ids, key.answers))
        metrics = expected_metrics(dataset, sub)
    from moviefib.fileio import atomic_write

    atomic_write(args.out / EXPECTED, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {sub} and {args.out / EXPECTED}: accuracy {metrics['submissions'][0]['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
