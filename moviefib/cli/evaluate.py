"""``moviefib evaluate``: validate and score submissions, with humans side by side."""

from __future__ import annotations

import argparse
import sys

from . import EXIT_INVALID, EXIT_USAGE, CLIError

DESCRIPTION = "Validate and score one or two submissions on a split of a MovieFIB dataset."

EPILOG = """\
submission formats (UTF-8, one answer per question of the split):
  TSV   a header line 'question_id<TAB>answer', then 'question_id<TAB>answer' per question
  JSON  one object {"<question_id>": "<answer>", ...}   (chosen by a .json suffix or a leading '{')
  list  with --order-of FIB: one answer per line, no header, in the row order of the official
        8-column FIB file (rows matched to questions by clip id and question text)

validation: missing, duplicate (same or conflicting answers) and unknown ids, empty answers, several
words where one is expected, wrong header or columns, invalid UTF-8, malformed JSON, an empty file are
each reported with a count and the first offending lines. --allow-missing scores missing answers as
wrong; --allow-invalid scores empty and multi-word answers as wrong.

metrics: exact-match accuracy (as published) and accuracy after normalisation (NFKC, case folded,
surrounding punctuation stripped); --lemma adds a lemma match (spaCy). 95% confidence intervals and the
paired comparison of two submissions are bootstrapped by sentence. The published MovieFIB human
accuracies (30.2% text only, 68.7% with video) are always shown as published; --humans FILE measures
human accuracy from a JSONL file of answers (question_id, answer, mode, annotator, seconds, skipped).

protocols: the official score counts every question of the split. --protocol frozenbilm also scores
the rows FrozenBiLM's code scores (FIB files read by pandas read_csv(sep="\\t"): the first row is the
header, quoted fields merge rows; rows without a blank dropped; answers outside the 1,000 most frequent
training answers count wrong), beside the official score. The files are rebuilt from a dataset imported
from them (moviefib build import), or given with --fib and --train-fib; on a built dataset only the
steps that apply are applied, and the report says which.

outputs: a table on stdout; with --out DIR also metrics.json (with sha256 fingerprints of the dataset
and submissions), report.md and accuracy_by_pos.png.

exit status: 0 scored; 2 usage error (bad option); 3 invalid input (invalid submission, a missing,
unreadable or malformed input file, split or key, an output that cannot be written); 5 an optional
resource (spaCy model, matplotlib; pandas for --protocol frozenbilm) is missing.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="validate and score submissions", description=DESCRIPTION,
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="dataset folder (moviefib build output)")
    p.add_argument("submissions", metavar="SUBMISSION", nargs="+",
                   help="submission file; give two to compare them (paired bootstrap)")
    p.add_argument("--split", default="val", help="split to score (default: val)")
    p.add_argument("--key", metavar="KEYFILE",
                   help="answer key of a blind split (default: DATASET.keys/SPLIT.parquet)")
    p.add_argument("--order-of", metavar="FIB",
                   help="submissions are plain answer lists in the row order of this official FIB file")
    p.add_argument("--allow-missing", action="store_true", help="score missing answers as wrong")
    p.add_argument("--allow-invalid", action="store_true",
                   help="score empty and multi-word answers as wrong")
    p.add_argument("--by", metavar="COL", action="append", default=[],
                   help="also break accuracy down by this label column (repeatable)")
    p.add_argument("--humans", metavar="FILE", help="human-answer JSONL file to compare with")
    p.add_argument("--protocol", choices=("official", "frozenbilm"), default="official",
                   help="also score the rows FrozenBiLM's code scores (frozenbilm), beside the official "
                        "all-rows score (default: official only)")
    p.add_argument("--fib", metavar="FILE",
                   help="with --protocol frozenbilm: the official FIB file of the split (checked against "
                        "the dataset's rows; default: rebuilt from an imported dataset)")
    p.add_argument("--train-fib", metavar="FILE",
                   help="with --protocol frozenbilm: the official training FIB file, for the 1,000 training "
                        "answers (default: the dataset's train split)")
    p.add_argument("--lemma", action="store_true", help="also report a lemma match (loads spaCy)")
    p.add_argument("--out", metavar="DIR", help="write metrics.json, report.md and the chart here")
    p.add_argument("--no-chart", action="store_true", help="with --out, skip the PNG chart")
    p.add_argument("--bootstrap", metavar="N", type=int, default=1000,
                   help="bootstrap resamples (default 1000; 0 = no intervals; at most 100,000)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="bootstrap seed, >= 0 (default 0)")
    p.add_argument("--no-progress", action="store_true",
                   help="accepted like every long-running command's; evaluate shows no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate import api, report
    from ..evaluate.errors import EvaluationError, SubmissionInvalid

    if len(args.submissions) > 2:
        raise CLIError(f"at most two submissions, got {len(args.submissions)}", EXIT_USAGE)
    try:
        ev = api.evaluate(args.dataset, args.submissions, split=args.split, key_file=args.key,
                          order_of=args.order_of, allow_missing=args.allow_missing,
                          allow_invalid=args.allow_invalid, by=args.by, humans=args.humans,
                          bootstrap=args.bootstrap, seed=args.seed, lemma=args.lemma,
                          protocol=args.protocol, fib_file=args.fib, train_fib_file=args.train_fib)
    except SubmissionInvalid as exc:
        for rep in exc.reports:
            for line in rep.describe():
                print(line, file=sys.stderr)
            if "missing" in rep.fatal_kinds:
                print(f"{rep.path}: hint: --allow-missing scores missing answers as wrong", file=sys.stderr)
        raise CLIError(str(exc), EXIT_INVALID) from None
    except EvaluationError as exc:
        raise CLIError(str(exc), exc.exit_code) from None
    except OSError as exc:
        raise CLIError(f"{exc.filename or ''}: {exc.strerror or exc}", EXIT_INVALID) from None
    print(report.format_table(ev), end="")
    if args.out:
        try:
            written = report.write_outputs(ev, args.out, chart=not args.no_chart)
        except EvaluationError as exc:
            raise CLIError(str(exc), exc.exit_code) from None
        except OSError as exc:
            raise CLIError(f"cannot write to {args.out}: {exc.strerror or exc}", EXIT_INVALID) from None
        for path in written:
            print(f"wrote {path}")
    return 0
