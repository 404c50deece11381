"""Red-team regressions for the FrozenBiLM surfaces of issue 15: its feature file (import/export), the
``--protocol frozenbilm`` inputs, and ``train.init_from`` with FrozenBiLM's checkpoints. Each test is of
a defect found by hostile input: a traceback, a hang, a silent wrong result or a message that did not
say what was wrong."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors", "ignore:Validating sparse")
torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from test_evaluate_protocol import VAL_LINES, _truth, _write, files, imported  # noqa: E402,F401

from moviefib.cli import main  # noqa: E402

_OK = {"a": torch.ones(2, 768, dtype=torch.float16)}


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _with_pickle(path: Path, payload: bytes) -> Path:
    """A torch.save archive, intact (every CRC right), whose data.pkl is ``payload``."""
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.ones(2)}}, buf)
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            zout.writestr(name, payload if name.endswith("/data.pkl") else zin.read(name))
    return path


class _RunsACommand:
    """Unpickled by a plain pickle.load, it would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# Pickles an intact archive can hold that the weights-only unpickler fails on with its own errors:
# APPEND on an empty stack (IndexError), BININT cut short (struct.error), a pickle cut (EOFError; the
# feature file's reader caught that one already).
DAMAGED_PICKLES = {"append-empty": b"a.", "binint-cut": b"J\x01", "cut": b"\x80\x02}q\x00(X\x01\x00\x00\x00"}


# ---------------------------------------------------------------- FrozenBiLM's feature file


@pytest.mark.parametrize("make, words", [
    (lambda: torch.ones(2, 768).to_sparse(), "clip a: a torch.sparse_coo tensor, not a dense one"),
    (lambda: torch.empty(2, 768, device="meta"), "clip a: a meta tensor, not a dense one"),
    (lambda: torch.nested.nested_tensor([torch.ones(2, 768), torch.ones(3, 768)]), "clip a: a nested tensor"),
], ids=["sparse", "meta", "nested"])
def test_import_refuses_a_tensor_without_dense_rows(tmp_path, capsys, make, words):
    # Each raised from torch (shape, isfinite or nonzero) as a traceback.
    pth = tmp_path / "f.pth"
    torch.save({"a": make()}, pth)
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5"], capsys)
    assert code == 3 and f"{pth}: {words}" in _one_line(err), err
    assert not (tmp_path / "o.h5").exists()


def test_import_names_the_file_of_a_clip_id_that_is_not_unicode(tmp_path, capsys):
    # h5py failed on the lone surrogate with "'utf-8' codec can't encode ...", naming no file.
    pth = tmp_path / "f.pth"
    torch.save({"a\ud800": _OK["a"]}, pth)
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5"], capsys)
    assert code == 3 and f"{pth}: clip 'a\\ud800': not valid Unicode" in _one_line(err), err


@pytest.mark.parametrize("case", ["append-empty", "binint-cut"])
def test_import_refuses_a_damaged_pickle_in_an_intact_archive(tmp_path, capsys, case):
    pth = _with_pickle(tmp_path / "f.pth", DAMAGED_PICKLES[case])
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5"], capsys)
    assert code == 3 and f"{pth}: not a file torch.load reads with weights_only=True" in _one_line(err), err


def test_import_refuses_a_damaged_legacy_file(tmp_path, capsys):
    # A legacy (non-zip) torch.save whose storage key no longer matches: torch asserts.
    buf = io.BytesIO()
    torch.save(_OK, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    key = pickle.loads(data[data.index(b"\x80\x02]"):])[0].encode()  # the storage keys follow the object
    pth = tmp_path / "f.pth"
    pth.write_bytes(data.replace(key, key[:-1] + (b"0" if key[-1:] != b"0" else b"1"), 1))
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5"], capsys)
    assert code == 3 and f"{pth}: not a file torch.load reads" in _one_line(err), err


def test_a_file_that_would_run_a_command_is_refused_naming_the_call(tmp_path, capsys):
    # torch's message opened with advice to load it with weights_only=False: the one thing not to do.
    marker = tmp_path / "ran"
    pth = _with_pickle(tmp_path / "f.pth", pickle.dumps({"a": _RunsACommand(marker)}, protocol=2))
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5"], capsys)
    assert code == 3 and f"it holds {os.system.__module__}.system, which weights_only=True does not load" in err
    assert "weights_only=False" not in _one_line(err) and not marker.exists()


# ---------------------------------------------------------------- train.init_from


def test_init_from_refuses_damaged_and_command_running_pickles(tmp_path):
    from moviefib.models.frozenbilm_checkpoint import read_init_file
    from moviefib.training.checkpoints import CheckpointError

    for case, payload in DAMAGED_PICKLES.items():
        path = _with_pickle(tmp_path / f"{case}.pth", payload)
        with pytest.raises(CheckpointError, match=r"not a checkpoint train\.init_from reads") as err:
            read_init_file(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    marker = tmp_path / "ran"
    path = _with_pickle(tmp_path / "evil.pth", pickle.dumps({"model": _RunsACommand(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=rf"\(it pickles {os.system.__module__}\.system\)$"):
        read_init_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("value, words", [
    (torch.full((3, 2), float("nan")), "holds NaN or infinite values"),
    (torch.full((3, 2), float("inf")), "holds NaN or infinite values"),
    (torch.ones(3, 2, dtype=torch.int64), "holds torch.int64 values, not floating point"),
    (torch.ones(3, 2, dtype=torch.complex64), "holds torch.complex64 values, not floating point"),
    (torch.ones(3, 2).to_sparse(), "holds a torch.sparse_coo tensor, not a dense one"),
    (torch.empty(3, 2, device="meta"), "holds a meta tensor, not a dense one"),
], ids=["nan", "inf", "int", "complex", "sparse", "meta"])
def test_the_converter_refuses_values_load_state_dict_would_cast_or_copy(value, words):
    # NaN and casts were loaded silently (a zero-shot run then scored garbage); sparse and meta
    # tensors failed in load_state_dict with a traceback.
    from moviefib.models.frozenbilm_checkpoint import ConversionError, convert_state_dict

    model = {"linear_video.weight": torch.zeros(3, 2), "linear_video.bias": torch.zeros(3)}
    theirs = {"deberta.embeddings.linear_video.weight": value,
              "deberta.embeddings.linear_video.bias": torch.zeros(3)}
    with pytest.raises(ConversionError, match=rf"^key deberta\.embeddings\.linear_video\.weight {words}"):
        convert_state_dict(theirs, model, base="deberta", mlm=True)
    half = {k: v.half() for k, v in {**theirs, "deberta.embeddings.linear_video.weight": torch.ones(3, 2)}.items()}
    assert set(convert_state_dict(half, model, base="deberta", mlm=True).state) == set(model)  # float16 loads


# ---------------------------------------------------------------- --protocol frozenbilm inputs


def test_a_named_pipe_as_fib_file_is_refused_not_waited_on(imported, tmp_path):  # noqa: F811
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sub = _truth(tmp_path, imported)
    for flag in ("--fib", "--train-fib"):
        # In a child: reading the pipe blocked for ever before the fix.
        run = subprocess.run([sys.executable, "-m", "moviefib", "evaluate", str(imported), str(sub), "--protocol",
                              "frozenbilm", "--bootstrap", "0", flag, str(fifo)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 3 and f"{flag} {fifo}: is a named pipe (FIFO), not a regular file" in run.stderr


def _evaluate_err(imported, tmp_path, capsys, *flags):  # noqa: F811
    code, _, err = _cli(["evaluate", imported, _truth(tmp_path, imported), "--protocol", "frozenbilm", "--bootstrap",
                         "0", *flags], capsys)
    assert code == 3, err
    return _one_line(err)


def test_a_device_as_train_fib_is_refused(imported, tmp_path, capsys):  # noqa: F811
    err = _evaluate_err(imported, tmp_path, capsys, "--train-fib", os.devnull)
    assert f"--train-fib {os.devnull}: is a character device, not a regular file" in err


def test_a_train_fib_of_only_its_header_is_refused(imported, tmp_path, capsys):  # noqa: F811
    # Every answer was counted wrong (accuracy 0.00%, exit 0): a wrong file, not a score.
    header = _write(tmp_path / "train.csv", VAL_LINES[:1])
    err = _evaluate_err(imported, tmp_path, capsys, "--train-fib", header)
    assert f"{header}: no training row after its first line" in err


def test_a_fib_file_too_short_or_with_a_short_line_says_so(imported, tmp_path, capsys):  # noqa: F811
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")  # was "line 1: None is not question val-0"
    assert f"{empty}: has no line 1 for question val-0" in _evaluate_err(imported, tmp_path, capsys, "--fib", empty)
    short = _write(tmp_path / "short.csv", [VAL_LINES[0], VAL_LINES[1].rsplit("\t", 1)[0], *VAL_LINES[2:]])
    err = _evaluate_err(imported, tmp_path, capsys, "--fib", short)
    assert f"{short} line 2: 7 tab-separated field(s), not the 8 of question val-1" in err


@pytest.mark.parametrize("theirs", [
    {}, {"answer_bias": torch.zeros(3), "deberta.embeddings.position_ids": torch.arange(3)[None]},
], ids=["empty", "only-keys-left-out"])
def test_the_converter_refuses_a_state_dict_that_loads_nothing(theirs):
    # A text model took it: nothing loaded, yet the run was recorded as initialised from the file, and
    # train.epochs = 0 of a classifier head (random answers) was no longer refused.
    from moviefib.models.frozenbilm_checkpoint import ConversionError, convert_state_dict

    model = {"lm.deberta.embeddings.word_embeddings.weight": torch.zeros(3, 2)}
    with pytest.raises(ConversionError, match=rf"^holds no weight this model loads \({len(theirs)} key"):
        convert_state_dict(theirs, model, base="deberta", mlm=True)


@pytest.mark.parametrize("case", ["append-empty", "binint-cut"])
def test_predict_refuses_a_checkpoint_with_a_damaged_pickle_in_an_intact_archive(tmp_path, capsys, case):
    """moviefib predict / --resume read checkpoints as train.init_from does: a pickle damaged inside an
    intact archive was IndexError / struct.error as a traceback."""
    ckpt = _with_pickle(tmp_path / "best.pt", DAMAGED_PICKLES[case])
    code, _, err = _cli(["predict", ckpt, tmp_path, "--split", "val", "--out", tmp_path / "p.tsv"], capsys)
    assert code == 3 and f"{ckpt}: not a moviefib checkpoint" in _one_line(err), err
