"""ExtractSettings: one record of how an extraction runs, its open defaults resolved by the library (per
device, per extractor kind, under torchrun), its bad values refused in one line naming the field."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from moviefib.distributed import LaunchError
from moviefib.features.pipeline import ExtractSettings, SettingsError, default_sampling, extract
from moviefib.integrity import DurationTolerance
from moviefib.video import EveryKth, Windows

ROOT = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
NO_LAUNCH: dict[str, str] = {}  # the environment of a plain run: no torchrun variables
TORCHRUN = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "1"}


class _Split:
    """A preprocess with a uint8 half and a device half (as FramePreprocess has)."""

    def resize_crop(self, x):
        return x

    def normalise(self, x):
        return x


def _extractor(kind: str, split: bool = False):
    return SimpleNamespace(name=f"fake{kind}", kind=kind, preprocess=_Split() if split else (lambda x: x),
                           window=8, fps=12.5)


@pytest.mark.parametrize("kind, batch", [("2d", 4), ("3d", 2)])
def test_cpu_defaults(kind, batch):
    s = ExtractSettings().resolved(_extractor(kind, split=True), environ=NO_LAUNCH)
    assert (s.device, s.shard, s.batch_size, s.num_workers) == ("cpu", None, batch, max(1, CORES - 1))
    assert s.main_threads is None  # the model runs on this process's threads: left alone
    assert s.normalise_on_device is False  # the workers normalise, in parallel with the model


@pytest.mark.parametrize("kind, batch", [("2d", 256), ("3d", 32)])
def test_cuda_defaults(kind, batch):
    torch = pytest.importorskip("torch")  # asked for its thread count; no GPU needed to resolve
    s = ExtractSettings(device="cuda").resolved(_extractor(kind, split=True), environ=NO_LAUNCH)
    assert (s.device, s.batch_size, s.num_workers) == ("cuda", batch, CORES)
    assert s.main_threads == min(2, torch.get_num_threads()) and s.normalise_on_device is True
    plain = ExtractSettings(device="cuda:0").resolved(_extractor(kind), environ=NO_LAUNCH)
    assert plain.normalise_on_device is False  # no uint8 half to ship


def test_given_values_are_kept():
    given = ExtractSettings(device="cpu", batch_size=7, num_workers=0, shard=(1, 3), main_threads=1,
                            normalise_on_device=False)
    assert given.resolved(_extractor("2d"), environ=NO_LAUNCH) == given  # nothing was open
    under_torchrun = dataclasses.replace(given, shard=(2, 4))  # torchrun's own shard (resolved before)
    assert under_torchrun.resolved(_extractor("2d"), environ=TORCHRUN) == under_torchrun


def test_a_shard_given_under_torchrun_is_refused():
    # Every process would take the same clips, and all but one would stop at the output's lock.
    with pytest.raises(SettingsError, match=r"shard=\(1, 3\): given under torchrun \(RANK=2, WORLD_SIZE=4\)"):
        ExtractSettings(shard=(1, 3)).resolved(environ=TORCHRUN)
    assert ExtractSettings(shard=(1, 3)).resolved(environ={"WORLD_SIZE": "1"}).shard == (1, 3)


def test_torchrun_gives_the_shard_and_the_cuda_device():
    pytest.importorskip("torch")
    s = ExtractSettings(device="cuda").resolved(environ=TORCHRUN)
    assert (s.device, s.shard) == ("cuda:1", (2, 4))
    assert ExtractSettings(device="cuda:3").resolved(environ=TORCHRUN).device == "cuda:3"  # asked for: kept
    cpu = ExtractSettings().resolved(environ=TORCHRUN)
    assert (cpu.device, cpu.shard) == ("cpu", (2, 4))
    assert ExtractSettings(device="cuda").resolved(environ={"WORLD_SIZE": "1", "LOCAL_RANK": "1"}).device == "cuda"


def test_resolving_twice_changes_nothing():
    once = ExtractSettings().resolved(_extractor("3d"), environ=TORCHRUN)
    assert once.resolved(_extractor("3d"), environ=TORCHRUN) == once


def test_nonsense_from_torchrun_is_one_line():
    with pytest.raises(LaunchError, match="WORLD_SIZE='two': expected an integer"):
        ExtractSettings().resolved(environ={"WORLD_SIZE": "two"})


@pytest.mark.parametrize("field, value, words", [
    ("device", "tpu", "expected cpu, cuda or cuda:N"),
    ("device", "mps", "expected cpu, cuda or cuda:N"),
    ("device", "", "expected cpu, cuda or cuda:N"),
    ("device", "cuda:x", "expected cpu, cuda or cuda:N"),
    ("device", None, "expected cpu, cuda or cuda:N"),
    # torch refuses cuda:01 (a traceback) and keeps an index in a signed byte: cuda:128 is cuda:-128
    ("device", "cuda:01", "N from 0 to 127 without a leading zero"),
    ("device", "cuda:128", "N from 0 to 127 without a leading zero"),
    ("device", "cuda:" + "9" * 5000, "N from 0 to 127"),  # more digits than int() reads
    ("batch_size", 0, "must be at least 1"),
    ("batch_size", 2.5, "expected a whole number"),
    ("batch_size", True, "expected a whole number"),
    ("num_workers", -1, "must be at least 0"),
    ("backend", "ffmpeg", "expected one of pyav, torchcodec"),
    ("short_side", 0, "must be at least 1"),
    ("decode_threads", None, "expected a whole number"),
    ("shard", (3, 3), "need 0 <= i < n"),
    ("shard", "0/2", "expected (i, n)"),
    ("amp", "yes", "expected True or False"),
    ("stage_seconds", -1, "expected a number of seconds >= 0"),
    ("stage_seconds", float("nan"), "expected a number of seconds >= 0"),
    ("stage_seconds", float("-inf"), "expected a number of seconds >= 0"),
    pytest.param("stage_seconds", -(10**400), "expected a number of seconds >= 0",
                 id="stage_seconds-past-float"),  # math.isfinite raised OverflowError on it
    ("stage_seconds", True, "expected a number of seconds >= 0"),
    ("normalise_on_device", 1, "expected True, False or None"),
    ("main_threads", 0, "must be at least 1"),
    ("tolerance", 0.5, "expected a moviefib.integrity.DurationTolerance"),
])
def test_a_bad_value_is_one_line_naming_the_field(field, value, words):
    with pytest.raises(SettingsError) as info:
        ExtractSettings(**{field: value})
    exc = info.value
    assert isinstance(exc, ValueError) and (exc.field, exc.value) == (field, value)
    assert str(exc).startswith(f"{field}=") and words in str(exc) and "\n" not in str(exc)


def test_a_whole_number_of_seconds_past_float_is_taken():
    assert ExtractSettings(stage_seconds=10**400).stage_seconds == 10**400  # math.isfinite raised on it


def test_normalising_on_the_device_needs_a_split_preprocess():
    with pytest.raises(ValueError, match="fake2d.*no uint8 half"):
        ExtractSettings(normalise_on_device=True).resolved(_extractor("2d"), environ=NO_LAUNCH)


def test_the_record_is_frozen_and_replaceable():
    s = ExtractSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 3  # type: ignore[misc]
    assert dataclasses.replace(s, tolerance=DurationTolerance(0.3, 0.8)).tolerance.short == 0.3


def test_extract_takes_fields_by_name_and_refuses_others(tmp_path):
    # Checked before the extractor, the clips or the output are touched.
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        extract([], tmp_path / "x.h5", None, EveryKth(1), batchsize=4)
    with pytest.raises(SettingsError, match="batch_size=0"):
        extract([], tmp_path / "x.h5", None, EveryKth(1), settings=ExtractSettings(), batch_size=0)
    assert not list(tmp_path.iterdir())


def test_default_sampling_per_kind():
    assert default_sampling(_extractor("2d")) == EveryKth(1)
    assert default_sampling(_extractor("3d")) == Windows(8, fps=12.5)


def test_importing_the_settings_does_not_import_torch():
    code = ("import sys, moviefib.features.settings, moviefib.features.pipeline; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_cli_reads_torchrun_through_the_library(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("av")
    pytest.importorskip("h5py")
    from moviefib.cli import EXIT_USAGE, main

    (tmp_path / "videos").mkdir()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    code = main(["extract", "--extractor", "resnet50", "--folder", str(tmp_path / "videos"),
                 "-o", str(tmp_path / "o.h5"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1 and "expected 0 <= RANK < WORLD_SIZE" in err[0]


def test_the_cli_names_its_flag_for_a_bad_setting(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("av")
    pytest.importorskip("h5py")
    from moviefib.cli import EXIT_USAGE, main

    code = main(["extract", "--extractor", "resnet50", "--folder", str(tmp_path), "-o", str(tmp_path / "o.h5"),
                 "--workers", "-2", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and err == [err[0]] and "--workers -2: must be at least 0" in err[0]


def test_check_classifies_the_first_clips(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("h5py")
    import numpy as np

    from moviefib.features.check import classifier_problem, top_classes
    from moviefib.features.store import write_store

    write_store(tmp_path / "s.h5", [("a", np.array([[0.0, 3.0, 1.0]] * 2), np.arange(2.0)),
                                    ("b", np.array([[2.0, 0.0, 1.0]]), np.zeros(1)),
                                    ("c", np.array([[1.0, 1.0, 1.0]]), np.zeros(1))], {"extractor": "x"})
    ext = SimpleNamespace(name="x", classify=lambda f: f, labels=["cat", "dog", "owl"])
    assert classifier_problem(ext) is None
    got = top_classes(tmp_path / "s.h5", ext, 2, k=2)
    assert [(c.clip_id, [label for label, _ in c.top]) for c in got] == [("a", ["dog", "owl"]), ("b", ["cat", "owl"])]
    want = torch.tensor([0.0, 3.0, 1.0]).softmax(-1)[1].item()
    assert got[0].top[0][1] == pytest.approx(want, rel=1e-3)
    headless = SimpleNamespace(name="y", classify=None, labels=None)
    assert "has no classifier" in classifier_problem(headless)
    with pytest.raises(ValueError, match="has no classifier"):
        top_classes(tmp_path / "s.h5", headless, 2)
    for n, k in ((-1, 5), (2, 0), (2.0, 5), (True, 5)):  # n=-1 was the store's clips but the last
        with pytest.raises(ValueError, match="expected whole numbers n >= 0 and k >= 1"):
            top_classes(tmp_path / "s.h5", ext, n, k=k)
    short = SimpleNamespace(name="z", classify=lambda f: f, labels=["cat", "dog"])  # 3 outputs, 2 labels
    with pytest.raises(ValueError, match="extractor z: its classifier gives 3 classes for 2 labels"):
        top_classes(tmp_path / "s.h5", short, 1, k=3)


@pytest.mark.parametrize("argv, env, words", [
    (["--shard", "3/3"], {}, "--shard: bad shard '3/3': need 0 <= i < N"),
    (["--shard", "x"], {}, "--shard: bad shard 'x'; expected i/N"),
    (["--shard", "0/3"], {"WORLD_SIZE": "2", "RANK": "1"}, "--shard 0/3: given under torchrun (RANK=1, WORLD_SIZE=2)"),
    (["--device", "cuda:01"], {}, "--device cuda:01: expected cpu, cuda or cuda:N, N from 0 to 127"),
    (["--device", "cuda:99999999999999999999"], {}, "--device cuda:99999999999999999999: expected cpu, cuda"),
])
def test_the_cli_names_the_flag_of_a_bad_shard_or_device(tmp_path, monkeypatch, capsys, argv, env, words):
    pytest.importorskip("torch")
    pytest.importorskip("av")
    pytest.importorskip("h5py")
    from moviefib.cli import EXIT_USAGE, main

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["extract", "--extractor", "resnet50", "--folder", str(tmp_path), "-o", str(tmp_path / "o.h5"),
                 "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1 and words in err[0], err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("extractor", "sampling", "words"), [
    ("i3d", "uniform:4", "extractor 'i3d' is 3D and reads windows of frames (16 for its weights); sampling "
                         "{'type': 'Uniform', 'n': 4} gives one frame per step: use windows:16"),
    ("resnet50", "windows:8", "extractor 'resnet50' is 2D and reads one frame per step"),
])
def test_the_cli_refuses_a_sampling_the_model_cannot_read_before_its_weights(tmp_path, capsys, extractor,
                                                                             sampling, words):
    """A weights file that is no file would be the error had the model been built first."""
    pytest.importorskip("torch")
    pytest.importorskip("av")
    pytest.importorskip("h5py")
    from moviefib.cli import EXIT_INVALID, main

    (tmp_path / "videos").mkdir()
    code = main(["extract", "--extractor", extractor, "--sampling", sampling, "--folder", str(tmp_path / "videos"),
                 "-o", str(tmp_path / "o.h5"), "--weights", str(tmp_path / "missing.pt"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_INVALID and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o.h5").exists()
