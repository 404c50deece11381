#!/usr/bin/env python
"""Figures of a checkout's house (issue 13): long functions, the largest module, the files one question
and one clip pass through, the cost of ``import moviefib`` and (optionally) the test-suite time.

    python scripts/house_figures.py [--root CHECKOUT] [--json OUT.json] [--suite]

``--root`` is the checkout measured (default: the one holding this script), so one copy of the script
measures an older release too (``git worktree add /tmp/before REV``, then ``--root /tmp/before``). Every
measurement that imports ``moviefib`` runs in a fresh child process with ``PYTHONPATH=ROOT`` and the
working folder ROOT, and checks that ``moviefib.__file__`` lies in ROOT (an editable install of another
checkout would otherwise be measured instead).

The two paths, each in its own process so that one path's imports do not hide the other's:

* question: a one-row LSMDC description file -> the real builder (spaCy tagging) -> a dataset folder
  -> a one-line submission -> the evaluator's score (which must be 1.0);
* clip: a synthetic video (written beforehand, in another process) -> extraction with a random-init
  registered extractor (``googlenet``, on the CPU, in this process) -> the store opened -> the dataset's
  question table -> ``FIBDataset`` -> ``Collator`` -> one training batch.

The files are collected with ``sys.setprofile`` (and ``threading.setprofile``): every Python frame whose
code lies under ROOT/moviefib. ``files_run`` counts a file whose module body ran (imported) or any of
whose functions ran; ``files_called`` only files whose functions were called. ``--suite`` runs the whole
test suite (minutes; only on a quiet machine) and reports its wall time and pytest's summary line.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LONG_FUNCTION = 80  # lines; issue 13: no function in the package longer than about 80 lines
CLIP_ID = "0001_HOUSE_FIGURES_00.00.00.000-00.00.02.000"
# One sentence with exactly one word to blank ('SOMEONE' is on the stop list): one question.
SENTENCE = "SOMEONE smiles."
EXTRACTOR = "googlenet"  # the paper's 2D network; random init needs no weights download
IMPORTTIME_RUNS = 5


# --- figures read from the source -------------------------------------------------------------------

def _package_files(root: Path) -> list[Path]:
    return sorted((root / "moviefib").rglob("*.py"))


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, first line, length) of every function, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            yield name, node.lineno, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def source_figures(root: Path) -> dict:
    """Functions longer than :data:`LONG_FUNCTION` lines and the largest module."""
    long, sizes = [], {}
    for path in _package_files(root):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        sizes[rel] = len(text.splitlines())
        for name, line, length in _functions(ast.parse(text, filename=rel)):
            if length > LONG_FUNCTION:
                long.append({"function": f"{rel}:{line} {name}", "lines": length})
    long.sort(key=lambda f: -f["lines"])
    largest = max(sizes, key=sizes.get)
    return {"long_functions": {"threshold": LONG_FUNCTION, "count": len(long), "functions": long},
            "largest_module": {"path": largest, "lines": sizes[largest]},
            "modules": len(sizes), "package_lines": sum(sizes.values())}


# --- child processes ----------------------------------------------------------------------------------

def _child_env(root: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return env


class FlowFailed(RuntimeError):
    """A traced path failed in its child process (the message ends with the child's last error line)."""


def _run_child(root: Path, *args: str) -> dict:
    """Run this script's ``--flow`` mode in a fresh process on ``root``; its last stdout line is JSON."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--root", str(root), *args]
    proc = subprocess.run(cmd, cwd=root, env=_child_env(root), capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        last = (proc.stderr.strip().splitlines() or ["(no error output)"])[-1]
        raise FlowFailed(f"{' '.join(args[:2])} failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _paths(root: Path) -> dict:
    """Both traced paths; a path that fails (a checkout in the middle of a refactor) is reported as
    ``{"error": ...}`` so that the other figures still come out."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="house-figures-") as tmp:
        for name, steps in (("question", ["question"]), ("clip", ["setup-clip", "clip"])):
            work = Path(tmp) / name
            work.mkdir()
            try:
                for step in steps:
                    out[name] = _run_child(root, "--flow", step, "--tmp", str(work))
            except FlowFailed as exc:
                out[name] = {"error": str(exc)}
    return out


def _check_package(root: Path) -> str:
    """Where ``moviefib`` was imported from; exits if it or any of its modules lies outside ``root``
    (an editable install's finder can serve a submodule from another checkout)."""
    import moviefib

    outside = [f"{name} ({mod.__file__})" for name, mod in sorted(sys.modules.items())
               if (name == "moviefib" or name.startswith("moviefib.")) and getattr(mod, "__file__", None)
               and not Path(mod.__file__).resolve().is_relative_to(root.resolve())]
    if outside:
        raise SystemExit(f"modules imported from outside the checkout {root}: {', '.join(outside)}")
    return str(Path(moviefib.__file__).resolve())


class FileTrace:
    """Files under ``root/moviefib`` whose Python code runs between ``start()`` and ``stop()``."""

    def __init__(self, root: Path):
        self.prefix = str((root / "moviefib").resolve()) + os.sep
        self.root = root.resolve()
        self.seen: set = set()  # code objects already recorded (the profile hook runs on every call)
        self.run: set[str] = set()
        self.called: set[str] = set()

    def _hook(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if code in self.seen:
            return
        self.seen.add(code)
        name = code.co_filename
        if name.startswith(self.prefix):
            rel = Path(name).relative_to(self.root).as_posix()
            self.run.add(rel)
            if code.co_name != "<module>":
                self.called.add(rel)

    def start(self) -> None:
        threading.setprofile(self._hook)
        sys.setprofile(self._hook)

    def stop(self) -> None:
        sys.setprofile(None)
        threading.setprofile(None)

    def result(self) -> dict:
        return {"files_run": len(self.run), "files_called": len(self.called),
                "files": sorted(self.run), "imported_only": sorted(self.run - self.called)}


def _write_descriptions(path: Path) -> Path:
    """A one-row LSMDC description file: clip id, aligned start/end, extracted start/end, sentence."""
    start, end = "00.00.00.000", "00.00.02.000"
    path.write_text("\t".join([CLIP_ID, start, end, start, end, SENTENCE]) + "\n", encoding="utf-8")
    return path


def _builder(root: Path):
    """The builder's package: ``moviefib.questions`` since issue 13, ``moviefib.build`` before. (The old
    name still works after the rename, but through a re-exporting module that a user of the new name
    never enters, so it would add one file to the figure.) Decided by the checkout's files, not by
    ``find_spec``: an editable install of a newer checkout finds its ``moviefib.questions`` for an
    older one."""
    import importlib

    new = (root / "moviefib" / "questions" / "__init__.py").is_file()
    return importlib.import_module("moviefib.questions" if new else "moviefib.build")


def _build(root: Path, annotations: Path, folder: Path) -> None:
    """The real builder (spaCy tagging) on the annotation file, every candidate word blanked."""
    b = _builder(root)
    loaded = b.from_descriptions(annotations)
    b.build_dataset(loaded.records, folder, b.BuildOptions(vocab=b.VocabSpec(unlimited=True)),
                    sources=[str(annotations)])


def _one_question(folder: Path, split: str) -> tuple[str, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "data" / f"{split}.parquet", columns=["question_id", "answer"])
    if table.num_rows != 1:
        raise SystemExit(f"{folder}: {table.num_rows} questions built from {SENTENCE!r}, expected 1")
    return table.column("question_id")[0].as_py(), table.column("answer")[0].as_py()


def flow_question(root: Path, tmp: Path) -> dict:
    """Annotation file -> dataset -> submission -> score, traced."""
    annotations = _write_descriptions(tmp / "LSMDC16_annos_val.csv")
    trace = FileTrace(root)
    trace.start()
    _build(root, annotations, tmp / "fib")
    qid, answer = _one_question(tmp / "fib", "val")
    from moviefib.evaluate import evaluate, write_submission

    write_submission(tmp / "submission.tsv", {qid: answer})
    result = evaluate(tmp / "fib", tmp / "submission.tsv", split="val", bootstrap=0)
    trace.stop()
    accuracy = result.submissions[0].summary.accuracy
    if accuracy != 1.0:
        raise SystemExit(f"the gold answer scored {accuracy}, not 1.0")
    return {"package": _check_package(root), "accuracy": accuracy, **trace.result()}


def setup_clip(root: Path, tmp: Path) -> dict:
    """Untraced set-up of the clip path: its dataset (one training question) and its video file."""
    from moviefib.video import write_synthetic_video

    _build(root, _write_descriptions(tmp / "LSMDC16_annos_training.csv"), tmp / "fib")
    (tmp / "clips").mkdir()
    write_synthetic_video(tmp / "clips" / f"{CLIP_ID}.mkv", 50, fps=25)
    return {"package": _check_package(root)}


def _extract(clips, out: Path, extractor, sampling):
    """``pipeline.extract`` with batch 4, no decode workers (all in this traced process), CPU, no AMP.

    Before issue 13 these are keyword arguments of ``extract``; issue 13 gathers them in one
    ``ExtractSettings`` record. Whichever the checkout has is used; neither is an error.
    """
    from moviefib.features import pipeline

    wanted = {"batch_size": 4, "num_workers": 0, "device": "cpu", "amp": False}
    params = inspect.signature(pipeline.extract).parameters
    if all(k in params for k in wanted):
        return pipeline.extract(clips, out, extractor, sampling, **wanted)
    settings_cls = getattr(pipeline, "ExtractSettings", None)
    holder = next((n for n, p in params.items() if "ExtractSettings" in str(p.annotation)), None)
    if settings_cls is None or holder is None:
        raise SystemExit(f"pipeline.extract{inspect.signature(pipeline.extract)}: neither the keyword "
                         f"arguments {sorted(wanted)} nor an ExtractSettings parameter")
    import dataclasses

    fields = {f.name for f in dataclasses.fields(settings_cls)}
    settings = settings_cls(**{k: v for k, v in wanted.items() if k in fields})
    direct = {k: v for k, v in wanted.items() if k not in fields and k in params}
    if "sampling" in params:
        direct["sampling"] = sampling
    elif "sampling" in fields:
        settings = dataclasses.replace(settings, sampling=sampling)
    return pipeline.extract(clips, out, extractor, **{holder: settings}, **direct)


def _batch(folder: Path, split: str, store) -> dict:
    """One training batch of the split's questions with the store's features, as training makes it."""
    from moviefib.data import Collator, FIBDataset, WordVocab, build_answer_vocab, count_answers
    from moviefib.dataset import QuestionView, read_table

    table = read_table(folder, split)
    answers = build_answer_vocab(count_answers(QuestionView(table, {})), preset="topk", k=1000)
    view = QuestionView(table, {a: i for i, a in enumerate(answers)})
    dataset = FIBDataset(view, WordVocab.build(view), stores={"2d": store}, train=True)
    return Collator()([dataset[i] for i in range(len(dataset))])


def flow_clip(root: Path, tmp: Path) -> dict:
    """Video file -> extraction -> store -> training batch, traced."""
    trace = FileTrace(root)
    trace.start()
    from moviefib.features.pipeline import clips_from_folder
    from moviefib.features.registry import create_extractor
    from moviefib.features.store import open_store
    from moviefib.video import EveryKth

    extractor = create_extractor(EXTRACTOR, weights=None, device="cpu")
    summary = _extract(clips_from_folder(tmp / "clips"), tmp / "googlenet.h5", extractor, EveryKth(5))
    batch = _batch(tmp / "fib", "train", open_store(tmp / "googlenet.h5"))
    trace.stop()
    if summary.extracted != 1 or tuple(batch["video"].shape[:2]) != (1, 10):
        raise SystemExit(f"expected 1 clip of 10 steps, got {summary.extracted} clips and a batch "
                         f"{tuple(batch['video'].shape)}")
    return {"package": _check_package(root), "batch_video_shape": list(batch["video"].shape), **trace.result()}


# --- import time and the suite --------------------------------------------------------------------------

def _importtime_rows(root: Path, code: str) -> tuple[str, list[tuple[str, int, int]]]:
    """stdout and the (module, self µs, cumulative µs) rows of ``python -X importtime -c code``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=root, env=_child_env(root),
                          capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, self_us, cumulative, name = (p.strip() for p in line.replace("import time:", "|", 1).split("|"))
        rows.append((name, int(self_us), int(cumulative)))
    return proc.stdout, rows


def _importtime_once(root: Path) -> dict:
    out, rows = _importtime_rows(root, "import moviefib, sys; print(moviefib.__file__); print('torch' in sys.modules)")
    where, torch_loaded = out.split()
    if not Path(where).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"moviefib imported from {where}, not from the checkout {root}")
    total = next(c for n, _, c in rows if n == "moviefib")
    return {"package": where, "moviefib_cumulative_us": total, "modules": len(rows),
            "moviefib_modules": sum(n == "moviefib" or n.startswith("moviefib.") for n, _, _ in rows),
            "torch_imported": torch_loaded == "True" or any(n == "torch" for n, _, _ in rows)}


def importtime(root: Path, runs: int = IMPORTTIME_RUNS) -> dict:
    """``python -X importtime -c "import moviefib"``: the median of ``runs`` runs after a warm-up one
    (which compiles the ``.pyc`` files a fresh worktree lacks)."""
    _importtime_once(root)
    results = [_importtime_once(root) for _ in range(runs)]
    last = results[-1]
    # What the interpreter imports on its own (site, encodings...), so that the difference is moviefib's.
    bare = len(_importtime_rows(root, "pass")[1])
    return {"package": last["package"], "runs": runs, "moviefib_cumulative_us_median": int(statistics.median(
        r["moviefib_cumulative_us"] for r in results)),
        "moviefib_cumulative_us_all": [r["moviefib_cumulative_us"] for r in results],
        "modules": last["modules"], "modules_beyond_bare_python": last["modules"] - bare,
        "moviefib_modules": last["moviefib_modules"],
        "torch_imported": any(r["torch_imported"] for r in results)}


def suite(root: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root,
                          env=_child_env(root), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return {"seconds": round(seconds, 1), "exit": proc.returncode, "summary": lines[-1] if lines else ""}


def _git(root: Path) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "changed_files": len(git("status", "--porcelain", "--untracked-files=no").splitlines())}


# --- output -------------------------------------------------------------------------------------------------

def _print_flow(title: str, flow: dict) -> None:
    if "error" in flow:
        print(f"{title}: NOT MEASURED, {flow['error']}")
        return
    print(f"{title}: {flow['files_run']} moviefib files run ({flow['files_called']} with a function called)")
    for f in flow["files"]:
        print(f"    {f}{'  (imported only)' if f in flow['imported_only'] else ''}")


def report(fig: dict) -> None:
    src = fig["source"]
    print(f"checkout {fig['root']} at {fig['git']['commit']} ({fig['git']['changed_files']} tracked files changed); "
          f"moviefib imported from {fig['importtime']['package']}")
    longf = src["long_functions"]
    print(f"functions over {longf['threshold']} lines: {longf['count']}")
    for f in longf["functions"]:
        print(f"    {f['lines']:4d}  {f['function']}")
    print(f"largest module: {src['largest_module']['path']} ({src['largest_module']['lines']} lines); "
          f"{src['modules']} modules, {src['package_lines']} lines")
    _print_flow("one question, annotation file -> score", fig["question"])
    _print_flow("one clip, video file -> training batch", fig["clip"])
    imp = fig["importtime"]
    print(f"import moviefib: {imp['moviefib_cumulative_us_median']} us cumulative (median of {imp['runs']}), "
          f"{imp['modules']} modules imported ({imp['modules_beyond_bare_python']} beyond a bare python, "
          f"{imp['moviefib_modules']} of moviefib), "
          f"torch imported: {imp['torch_imported']}")
    if "suite" in fig:
        print(f"test suite: {fig['suite']['seconds']} s, exit {fig['suite']['exit']}: {fig['suite']['summary']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout to measure (default: the one holding this script)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--suite", action="store_true", help="also time the whole test suite (minutes)")
    ap.add_argument("--flow", choices=["question", "setup-clip", "clip"], help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = args.root.resolve()
    if not (root / "moviefib" / "__init__.py").is_file():
        print(f"{root}: not a MovieFIB checkout (no moviefib/__init__.py)", file=sys.stderr)
        return 2
    if args.flow:  # a child process: one traced path, its figures as one JSON line
        flow = {"question": flow_question, "setup-clip": setup_clip, "clip": flow_clip}[args.flow]
        print(json.dumps(flow(root, args.tmp)))
        return 0
    fig = {"root": str(root), "git": _git(root), "source": source_figures(root), **_paths(root),
           "importtime": importtime(root)}
    if args.suite:
        fig["suite"] = suite(root)
    report(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1) + "\n", encoding="utf-8")
    return 1 if any("error" in fig[k] for k in ("question", "clip")) else 0


if __name__ == "__main__":
    sys.exit(main())
