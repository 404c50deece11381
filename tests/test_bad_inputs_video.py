"""Bad-input corpus for extraction and feature stores: every case is a clear refusal, never a traceback
and never a silent wrong result.

Two kinds of case, generated on the fly from small synthetic files:

* CLI cases (``moviefib extract``, ``features merge|export-npy|import-npy``): the exit status, one line
  on stderr naming the input, no traceback.
* Video cases: one extraction over a folder of bad videos; each bad file is a failure in the manifest
  with its reason, and no features of it reach the store.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("av")
pytest.importorskip("h5py")

from moviefib.cli import main  # noqa: E402
from moviefib.video import write_synthetic_video  # noqa: E402

EXTRACT = ["extract", "--preset", "efficientnet_lite0", "--weights", "none", "--no-progress"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Small inputs, good and bad, shared by the CLI cases."""
    from moviefib.features.store import write_store

    d = tmp_path_factory.mktemp("bad")
    (d / "videos").mkdir()
    write_synthetic_video(d / "videos" / "v.avi", 10, codec="mpeg4")
    (d / "empty_dir").mkdir()
    (d / "a_file").write_text("not a folder")
    (d / "garbage.h5").write_bytes(os.urandom(2000))
    (d / "out_dir").mkdir()
    (d / "three_cols.tsv").write_text("a\tb\tc\n")
    (d / "empty.tsv").write_text("")
    row = "\t00.00.01.000\t00.00.03.000\t00.00.01.000\t00.00.03.000\ta sentence\n"
    (d / "dotdot.tsv").write_text("0001_A_MOVIE/../../x_00.00.01.000-00.00.03.000" + row)
    (d / "absolute.tsv").write_text("/etc/0001_A_MOVIE_00.00.01.000-00.00.03.000" + row)
    (d / "not_a_dataset").mkdir()
    write_store(d / "s1.h5", [("a", np.ones((2, 3)), np.arange(2.0))], {"extractor": "x"})
    write_store(d / "s2.h5", [("b", np.ones((2, 4)), np.arange(2.0))], {"extractor": "y"})
    write_store(d / "dotdot.h5", [("../up", np.ones((1, 3)), np.zeros(1))], {"extractor": "x"})
    write_store(d / "absolute.h5", [("/tmp/abs", np.ones((1, 3)), np.zeros(1))], {"extractor": "x"})
    write_store(d / "control.h5", [("a\x01b", np.ones((1, 3)), np.zeros(1))], {"extractor": "x"})
    import h5py

    write_store(d / "incomplete.h5", [("a", np.ones((1, 3)), np.zeros(1))], {"extractor": "x"})
    with h5py.File(d / "incomplete.h5", "r+") as h5:
        h5.attrs["complete"] = False
    # Edited in place (another tool, a bad disk): merge gave a StopIteration traceback on the repeated id,
    # export-npy wrote NaN files, both exit 0.
    write_store(d / "twice.h5", [("a", np.ones((1, 3)), np.zeros(1)), ("b", np.ones((1, 3)), np.zeros(1))],
                {"extractor": "x"})
    with h5py.File(d / "twice.h5", "r+") as h5:
        h5["clip_ids"][1] = "a"
    write_store(d / "nan.h5", [("a", np.ones((2, 3)), np.arange(2.0))], {"extractor": "x"})
    with h5py.File(d / "nan.h5", "r+") as h5:
        h5["features"][1, 1] = np.nan
    with h5py.File(d / "foreign.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    npy = d / "npy"
    npy.mkdir()
    (npy / "corrupt_rgb.npy").write_bytes(b"\x93NUMPY garbage")
    (d / "npy3d").mkdir()
    np.save(d / "npy3d" / "c_rgb.npy", np.zeros((2, 3, 4), np.float32))
    (d / "npyts").mkdir()
    np.save(d / "npyts" / "c_rgb.npy", np.zeros((3, 4), np.float32))
    np.save(d / "npyts" / "c_timestamps_ms.npy", np.zeros(5))
    (d / "npynots").mkdir()
    np.save(d / "npynots" / "c_rgb.npy", np.zeros((3, 4), np.float32))
    (d / "npyok").mkdir()
    np.save(d / "npyok" / "c_rgb.npy", np.zeros((3, 4), np.float32))
    np.save(d / "npyok" / "c_timestamps_ms.npy", np.arange(3.0))
    for name, times in (("nan", [0.0, np.nan, 2.0]), ("negative", [-40.0, 0.0, 40.0]),
                        ("backwards", [0.0, 80.0, 40.0])):
        (d / f"npyts_{name}").mkdir()
        np.save(d / f"npyts_{name}" / "c_rgb.npy", np.zeros((3, 4), np.float32))
        np.save(d / f"npyts_{name}" / "c_timestamps_ms.npy", np.array(times))
    (d / "npyts_corrupt").mkdir()
    np.save(d / "npyts_corrupt" / "c_rgb.npy", np.zeros((3, 4), np.float32))
    (d / "npyts_corrupt" / "c_timestamps_ms.npy").write_bytes(b"\x93NUMPY garbage")
    (d / "weights_dir").mkdir()
    os.mkfifo(d / "pipe")  # special files: opening a pipe blocks, and --overwrite on a device replaced it
    (d / "null_link.h5").symlink_to(os.devnull)
    return d


def _no_av(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)


def _no_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)


def _no_h5py(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)


def _no_torchcodec(monkeypatch):
    from moviefib import video

    monkeypatch.setattr(video, "backend_problem", lambda name: "torchcodec cannot load FFmpeg's shared "
                        "libraries" if name == "torchcodec" else None)


# (case id, argv with {d} for the world folder, exit status, words the one line must hold, setup)
CLI_CASES = [
    # moviefib extract: inputs
    ("folder-missing", [*EXTRACT, "--folder", "{d}/nope", "-o", "{d}/o.h5"], 3, "no such folder", None),
    ("folder-is-a-file", [*EXTRACT, "--folder", "{d}/a_file", "-o", "{d}/o.h5"], 3, "not a folder", None),
    ("folder-without-videos", [*EXTRACT, "--folder", "{d}/empty_dir", "-o", "{d}/o.h5"], 3, "no video files", None),
    ("video-root-missing", [*EXTRACT, "--clips", "{d}/dotdot.tsv", "--video-root", "{d}/nope", "-o", "{d}/o.h5"],
     3, "no such folder", None),
    ("video-root-is-a-file", [*EXTRACT, "--clips", "{d}/dotdot.tsv", "--video-root", "{d}/a_file",
                              "-o", "{d}/o.h5"], 3, "not a folder", None),
    ("clips-missing", [*EXTRACT, "--clips", "{d}/nope.tsv", "--video-root", "{d}/videos", "-o", "{d}/o.h5"],
     3, "no such file", None),
    ("clips-not-a-dataset", [*EXTRACT, "--clips", "{d}/not_a_dataset", "--video-root", "{d}/videos",
                             "-o", "{d}/o.h5"], 3, "not a dataset folder", None),
    ("clips-three-columns", [*EXTRACT, "--clips", "{d}/three_cols.tsv", "--video-root", "{d}/videos",
                             "-o", "{d}/o.h5"], 3, "3 columns", None),
    ("clips-empty-file", [*EXTRACT, "--clips", "{d}/empty.tsv", "--video-root", "{d}/videos", "-o", "{d}/o.h5"],
     3, "empty.tsv", None),
    ("clips-id-with-dotdot", [*EXTRACT, "--clips", "{d}/dotdot.tsv", "--video-root", "{d}/videos",
                              "-o", "{d}/o.h5"], 3, "dotdot.tsv", None),
    ("clips-absolute-id", [*EXTRACT, "--clips", "{d}/absolute.tsv", "--video-root", "{d}/videos",
                           "-o", "{d}/o.h5"], 3, "absolute.tsv", None),
    ("clips-without-video-root", [*EXTRACT, "--clips", "{d}/dotdot.tsv", "-o", "{d}/o.h5"], 2, "--video-root", None),
    ("folder-with-video-root", [*EXTRACT, "--folder", "{d}/videos", "--video-root", "{d}", "-o", "{d}/o.h5"],
     2, "--clips", None),
    # moviefib extract: outputs
    ("output-is-a-directory", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/out_dir"], 3, "is a directory", None),
    ("output-under-a-file", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/a_file/o.h5"], 3, "is a file", None),
    ("output-is-not-a-store", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/garbage.h5"], 3, "--overwrite", None),
    # moviefib extract: settings
    ("tolerance-not-a-number", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--duration-tolerance",
                                "fast"], 2, "--duration-tolerance", None),
    ("tolerance-reversed", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--duration-tolerance",
                            "0.9,0.5"], 2, "short <= warn", None),
    ("tolerance-zero", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--duration-tolerance", "0"],
     2, "--duration-tolerance", None),
    ("tolerance-above-one", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--duration-tolerance",
                             "0.5,1.5"], 2, "--duration-tolerance", None),
    ("tolerance-three-values", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--duration-tolerance",
                                "0.1,0.2,0.3"], 2, "SHORT,WARN", None),
    ("shard-out-of-range", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--shard", "3/3"], 2, "shard",
     None),
    ("device-unknown", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--device", "tpu"], 2, "tpu", None),
    ("sampling-bad", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--sampling", "every:0"], 2, "k", None),
    # sampler parameters past their bounds: uniform:99999999999999 planned that many frames, ran until killed
    ("sampling-uniform-huge", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--sampling",
                               "uniform:99999999999999"], 2, "n <= 10,000", None),
    ("sampling-every-huge", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--sampling",
                             "every:999999999"], 2, "k <= 100,000", None),
    ("sampling-window-huge", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--sampling",
                              "windows:100000"], 2, "window <= 1,024", None),
    ("sampling-stride-huge", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--sampling",
                              "windows:16,stride=999999999"], 2, "stride <= 100,000", None),
    ("sampling-fps-huge", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--sampling",
                           "windows:16,fps=1e9"], 2, "<= 1,000", None),
    ("sampling-fps-nan", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--sampling",
                          "windows:16,fps=nan"], 2, "fps", None),
    ("preset-unknown", ["extract", "--preset", "nope", "--folder", "{d}/videos", "-o", "{d}/o.h5"], 2, "nope", None),
    ("weights-file-missing", ["extract", "--preset", "efficientnet_lite0", "--weights", "{d}/none.pt",
                              "--folder", "{d}/videos", "-o", "{d}/o.h5", "--no-progress"], 3, "none.pt", None),
    ("weights-file-garbage-2d", ["extract", "--preset", "efficientnet_lite0", "--weights", "{d}/garbage.h5",
                                 "--folder", "{d}/videos", "-o", "{d}/o.h5", "--no-progress"], 3,
     "not a loadable PyTorch state dict", None),
    ("weights-file-is-a-directory-2d", ["extract", "--preset", "efficientnet_lite0", "--weights",
                                        "{d}/weights_dir", "--folder", "{d}/videos", "-o", "{d}/o.h5",
                                        "--no-progress"], 3, "is a directory", None),
    ("weights-file-garbage-i3d", ["extract", "--preset", "i3d", "--weights", "{d}/garbage.h5",
                                  "--folder", "{d}/videos", "-o", "{d}/o.h5", "--no-progress"], 3,
     "not an I3D Flax checkpoint", None),
    ("weights-file-text-i3d", ["extract", "--preset", "i3d", "--weights", "{d}/three_cols.tsv",
                               "--folder", "{d}/videos", "-o", "{d}/o.h5", "--no-progress"], 3,
     "not an I3D Flax checkpoint", None),
    ("weights-file-is-a-directory-i3d", ["extract", "--preset", "i3d", "--weights", "{d}/weights_dir",
                                         "--folder", "{d}/videos", "-o", "{d}/o.h5", "--no-progress"], 3,
     "is a directory", None),
    # counts below their least value: --limit -1 sliced off the last clip, --limit 0 and --batch-size 0
    # fell back to every clip / the default
    ("limit-negative", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--limit", "-1"], 2,
     "--limit -1: must be at least 1", None),
    ("limit-zero", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--limit", "0"], 2,
     "--limit 0: must be at least 1", None),
    ("batch-size-zero", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--batch-size", "0"], 2,
     "--batch-size 0", None),
    ("workers-negative", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--workers", "-3"], 2,
     "--workers -3", None),
    ("decode-threads-negative", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--decode-threads", "-2"],
     2, "--decode-threads -2", None),
    ("short-side-negative", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--short-side", "-5"], 2,
     "--short-side -5", None),
    ("check-negative", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--check", "-1"], 2,
     "--check -1", None),
    # moviefib extract: what the machine lacks
    ("torchcodec-without-ffmpeg", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5", "--decoder",
                                   "torchcodec"], 5, "FFmpeg", _no_torchcodec),
    ("core-only-no-av", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5"], 5, "moviefib[features]", _no_av),
    ("core-only-no-torch", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/o.h5"], 5, "moviefib[features]",
     _no_torch),
    ("core-only-no-h5py", ["features", "merge", "{d}/m.h5", "{d}/s1.h5"], 5, "moviefib[features]", _no_h5py),
    # features merge
    ("merge-output-is-a-directory", ["features", "merge", "{d}/out_dir", "{d}/s1.h5"], 3, "is a directory", None),
    ("merge-output-under-a-file", ["features", "merge", "{d}/a_file/m.h5", "{d}/s1.h5"], 3, "is a file", None),
    ("merge-input-missing", ["features", "merge", "{d}/m.h5", "{d}/nope.h5"], 3, "no such feature store", None),
    ("merge-input-is-a-directory", ["features", "merge", "{d}/m.h5", "{d}/out_dir"], 3, "is a directory", None),
    ("merge-input-not-hdf5", ["features", "merge", "{d}/m.h5", "{d}/garbage.h5"], 3, "not a readable HDF5", None),
    ("merge-input-foreign-hdf5", ["features", "merge", "{d}/m.h5", "{d}/foreign.h5"], 3, "not a moviefib", None),
    ("merge-input-incomplete", ["features", "merge", "{d}/m.h5", "{d}/incomplete.h5"], 3, "incomplete", None),
    ("merge-different-settings", ["features", "merge", "{d}/m.h5", "{d}/s1.h5", "{d}/s2.h5"], 3, "provenance differs",
     None),
    # an existing OUT.h5 was replaced, its clips lost, with exit 0
    ("merge-output-exists", ["features", "merge", "{d}/s2.h5", "{d}/s1.h5"], 3, "pass --overwrite", None),
    ("merge-output-is-its-input", ["features", "merge", "{d}/s1.h5", "{d}/s1.h5"], 3, "pass --overwrite", None),
    # features export-npy
    ("export-store-missing", ["features", "export-npy", "{d}/nope.h5", "{d}/e"], 3, "no such feature store", None),
    ("export-store-is-a-directory", ["features", "export-npy", "{d}/out_dir", "{d}/e"], 3, "is a directory", None),
    ("export-store-not-hdf5", ["features", "export-npy", "{d}/garbage.h5", "{d}/e"], 3, "not a readable HDF5", None),
    ("export-into-a-file", ["features", "export-npy", "{d}/s1.h5", "{d}/a_file"], 3, "is a file", None),
    ("export-under-a-file", ["features", "export-npy", "{d}/s1.h5", "{d}/a_file/e"], 3,
     "a_file is a file, not a folder", None),
    ("export-id-with-dotdot", ["features", "export-npy", "{d}/dotdot.h5", "{d}/e"], 3, "'..'", None),
    ("export-absolute-id", ["features", "export-npy", "{d}/absolute.h5", "{d}/e"], 3, "absolute path", None),
    # --key is part of each file name: '../x' was refused late as "Invalid name '<clip>_../x.npy'" (exit 3),
    # an empty key exported under the default key (exit 0)
    ("export-key-dotdot", ["features", "export-npy", "{d}/s1.h5", "{d}/e", "--key", "../x"], 2,
     "--key '../x': id '../x' holds a path separator", None),
    ("export-key-empty", ["features", "export-npy", "{d}/s1.h5", "{d}/e", "--key", ""], 2, "--key '': empty key",
     None),
    ("export-key-dot", ["features", "export-npy", "{d}/s1.h5", "{d}/e", "--key", ".."], 2, "--key '..'", None),
    ("import-key-slash", ["features", "import-npy", "{d}/npyok", "{d}/i.h5", "--key", "a/b"], 2,
     "--key 'a/b'", None),
    ("import-key-empty", ["features", "import-npy", "{d}/npyok", "{d}/i.h5", "--key", ""], 2, "empty key", None),
    # an unregistered --extractor was recorded silently in the provenance
    ("import-extractor-unknown", ["features", "import-npy", "{d}/npyok", "{d}/i.h5", "--key", "rgb",
                                  "--extractor", "zzz"], 2, "not a registered extractor", None),
    ("import-foreign-without-extractor", ["features", "import-npy", "{d}/npyok", "{d}/i.h5", "--key", "rgb",
                                          "--foreign"], 2, "--foreign goes with --extractor", None),
    ("export-control-character-id", ["features", "export-npy", "{d}/control.h5", "{d}/e"], 3, "control character",
     None),
    # features import-npy
    ("import-dir-missing", ["features", "import-npy", "{d}/nope", "{d}/i.h5", "--key", "rgb"], 3, "no such folder",
     None),
    ("import-dir-is-a-file", ["features", "import-npy", "{d}/a_file", "{d}/i.h5", "--key", "rgb"], 3, "not a folder",
     None),
    ("import-no-files", ["features", "import-npy", "{d}/empty_dir", "{d}/i.h5", "--key", "rgb"], 3, "no *_rgb.npy",
     None),
    ("import-corrupt-npy", ["features", "import-npy", "{d}/npy", "{d}/i.h5", "--key", "rgb"], 3, "corrupt_rgb.npy",
     None),
    ("import-3d-array", ["features", "import-npy", "{d}/npy3d", "{d}/i.h5", "--key", "rgb"], 3, "[T, D]", None),
    ("import-timestamps-mismatch", ["features", "import-npy", "{d}/npyts", "{d}/i.h5", "--key", "rgb"], 3,
     "5 timestamps for 3", None),
    ("import-no-timestamps", ["features", "import-npy", "{d}/npynots", "{d}/i.h5", "--key", "rgb"], 3,
     "--step-seconds", None),
    ("import-negative-step", ["features", "import-npy", "{d}/npynots", "{d}/i.h5", "--key", "rgb",
                              "--step-seconds", "-1"], 2, "--step-seconds", None),
    ("import-output-is-a-directory", ["features", "import-npy", "{d}/npyok", "{d}/out_dir", "--key", "rgb"], 3,
     "is a directory", None),
    ("import-output-under-a-file", ["features", "import-npy", "{d}/npyok", "{d}/a_file/i.h5", "--key", "rgb"], 3,
     "is a file", None),
    ("import-output-exists", ["features", "import-npy", "{d}/npyok", "{d}/s1.h5", "--key", "rgb"], 3,
     "pass --overwrite", None),
    ("import-timestamp-nan", ["features", "import-npy", "{d}/npyts_nan", "{d}/i.h5", "--key", "rgb"], 3,
     "timestamp 1 is nan ms", None),
    ("import-timestamp-negative", ["features", "import-npy", "{d}/npyts_negative", "{d}/i.h5", "--key", "rgb"], 3,
     "timestamp 0 is -40 ms", None),
    ("import-timestamps-backwards", ["features", "import-npy", "{d}/npyts_backwards", "{d}/i.h5", "--key", "rgb"],
     3, "go backwards at 2", None),
    # moviefib demo: a negative seed was a numpy traceback (corpus) after the work had started (run)
    ("demo-corpus-negative-seed", ["demo", "corpus", "--out", "{d}/dc", "--size", "tiny", "--seed", "-1",
                                   "--no-progress"], 2, "seed must be >= 0, got -1", None),
    ("demo-run-negative-seed", ["demo", "run", "--out", "{d}/dr", "--size", "tiny", "--seed", "-1",
                                "--no-progress"], 2, "seed must be >= 0, got -1", None),
    # a malformed --set was exit 3 as if a recipe value were bad
    ("demo-run-set-malformed", ["demo", "run", "--out", "{d}/dr", "--size", "tiny", "--set", "zzz",
                                "--no-progress"], 2, "--set 'zzz': expected section.key=value", None),
    ("demo-run-set-unknown-key", ["demo", "run", "--out", "{d}/dr", "--size", "tiny", "--set", "train.zzz=1",
                                  "--no-progress"], 2, "--set 'train.zzz=1': unknown key", None),
    ("import-timestamps-corrupt", ["features", "import-npy", "{d}/npyts_corrupt", "{d}/i.h5", "--key", "rgb"], 3,
     "c_timestamps_ms.npy: not a readable .npy file", None),
    # special files: a pipe or a device as the clip list was 'no such file'; as the output, --overwrite
    # renamed the store onto it (as root, onto /dev/null itself)
    ("clips-named-pipe", [*EXTRACT, "--clips", "{d}/pipe", "--video-root", "{d}/videos", "-o", "{d}/o.h5"], 3,
     "a named pipe (FIFO), not a regular file", None),
    ("clips-device", [*EXTRACT, "--clips", os.devnull, "--video-root", "{d}/videos", "-o", "{d}/o.h5"], 3,
     "a character device, not a regular file", None),
    ("output-named-pipe-overwrite", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/pipe", "--overwrite"], 3,
     "is a named pipe (FIFO), not a regular file", None),
    ("output-device-overwrite", [*EXTRACT, "--folder", "{d}/videos", "-o", os.devnull, "--overwrite"], 3,
     "is a character device", None),
    ("output-link-to-device-overwrite", [*EXTRACT, "--folder", "{d}/videos", "-o", "{d}/null_link.h5",
                                         "--overwrite"], 3, "is a character device", None),
    ("merge-output-device", ["features", "merge", os.devnull, "{d}/s1.h5", "--overwrite"], 3,
     "is a character device", None),
    ("merge-clip-listed-twice", ["features", "merge", "{d}/m.h5", "{d}/twice.h5"], 3,
     "twice.h5: damaged feature store: clip a is listed twice", None),
    ("export-nan-features", ["features", "export-npy", "{d}/nan.h5", "{d}/e"], 3,
     "nan.h5: damaged feature store: clip a holds NaN or infinite values", None),
    ("merge-input-device", ["features", "merge", "{d}/m.h5", "{d}/s1.h5", os.devnull], 3,
     "/dev/null: a character device, not a feature store", None),
    ("export-store-named-pipe", ["features", "export-npy", "{d}/pipe", "{d}/e"], 3,
     "a named pipe (FIFO), not a feature store", None),
    ("import-output-named-pipe", ["features", "import-npy", "{d}/npyok", "{d}/pipe", "--key", "rgb", "--overwrite"],
     3, "is a named pipe", None),
]


@pytest.mark.parametrize("argv, code, words, setup", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_in_one_line(world, argv, code, words, setup, capsys, monkeypatch):
    if setup is not None:
        setup(monkeypatch)
    got = main([a.format(d=world) for a in argv])
    out = capsys.readouterr()
    err = out.err.strip()
    lines = [x for x in err.splitlines() if not x.startswith("extractor ")]  # the random-init notice
    assert got == code, err
    assert "Traceback" not in out.err and len(lines) == 1, err
    assert words in lines[0], lines[0]
    assert not (world / "e").exists() or not any((world / "e").rglob("*.npy"))  # export wrote nothing
    assert not (world / "o.h5.staging").exists() and not (world / "i.h5").exists()  # refused before any work


def test_import_records_a_foreign_extractor_when_told(world, tmp_path):
    from moviefib.features.store import open_store

    out = tmp_path / "f.h5"
    assert main(["features", "import-npy", str(world / "npyok"), str(out), "--key", "rgb", "--step-seconds",
                 "1", "--extractor", "vf_resnet", "--foreign"]) == 0
    with open_store(out) as store:
        assert store.provenance["extractor"] == "vf_resnet"


# ---------------------------------------------------------------------------------------------------
# Video cases: each bad file fails with its reason; the good one is extracted.


def _cut(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _png(path: Path, fmt: str = "image2", codec: str = "png") -> None:
    import av

    tmp = path.with_name(path.name + ".png" if codec == "png" else path.name + ".jpg")
    with av.open(str(tmp), "w", format=fmt) as c:
        st = c.add_stream(codec, rate=1)
        st.width, st.height = 16, 16
        st.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
        img = np.zeros((16, 16, 3), np.uint8)
        for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=st.pix_fmt)):
            c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    tmp.rename(path)


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("mp2", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
        frame.sample_rate = 44100
        for pkt in st.encode(frame):
            c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory):
    """A folder of bad videos (plus one good) and one extraction over it: its summary."""
    import torch

    from moviefib.features.pipeline import ClipSource, clips_from_folder, extract
    from moviefib.features.registry import Extractor
    from moviefib.video import Segment

    d = tmp_path_factory.mktemp("badvid")
    v = d / "v"
    v.mkdir()
    src_avi = write_synthetic_video(d / "src.avi", 100, codec="mpeg4")
    src_mkv = write_synthetic_video(d / "src.mkv", 100)
    src_mp4 = write_synthetic_video(d / "src.mp4", 100, codec="mpeg4")
    write_synthetic_video(v / "good.avi", 100, codec="mpeg4")
    (v / "empty.avi").write_bytes(b"")
    (v / "random.avi").write_bytes(os.urandom(5000))
    (v / "text.mp4").write_text("this is not a video\n" * 50)
    (v / "riff_only.avi").write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST")
    _png(v / "png.avi")
    _png(v / "jpeg.mp4", fmt="image2", codec="mjpeg")
    _audio_only(v / "audio.avi")
    for frac in (0.3, 0.5, 0.6):
        _cut(src_avi, v / f"avi_cut{int(frac * 100)}.avi", frac)
    for frac in (0.1, 0.3, 0.5):
        _cut(src_mkv, v / f"mkv_cut{int(frac * 100)}.mkv", frac)
        _cut(src_mp4, v / f"mp4_cut{int(frac * 100)}.mp4", frac)
    (v / "header_only.avi").write_bytes(src_avi.read_bytes()[:600])
    (v / "broken_link.avi").symlink_to(d / "gone.avi")
    (v / "loop.avi").symlink_to(v / "loop.avi")
    (v / "folder.avi").mkdir()
    os.mkfifo(v / "pipe.avi")  # opening it blocked extraction for good (the source hash opened it)
    (v / "zero_device.avi").symlink_to("/dev/zero")  # was 'empty file'
    (v / "bad\x01name.avi").write_bytes(src_avi.read_bytes())
    clips = clips_from_folder(v)
    movie = write_synthetic_video(d / "movie.mkv", 100)  # 4 s
    clips += [ClipSource("segment_past_end", str(movie), Segment(3.5, 6.5), expected_duration=3.0),
              ClipSource("segment_after_end", str(movie), Segment(5.0, 7.0), expected_duration=2.0),
              ClipSource("id_longer_than_file", str(src_avi), expected_duration=10.0),
              ClipSource("missing", str(d / "missing.avi"), expected_duration=2.0)]

    def pre(frames):
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    ext = Extractor("tiny2d", "2d", model, pre, 4, provenance={"weights": "random-init"})
    summary = extract(clips, d / "out.h5", ext, _every(10), num_workers=0)
    return summary, d / "out.h5"


def _every(k):
    from moviefib.video import EveryKth

    return EveryKth(k)


# (clip id, words its failure reason must hold)
VIDEO_CASES = [
    ("empty", "empty file"),
    ("random", "cannot open"),
    ("text", "cannot open"),
    ("riff_only", "cannot open"),
    ("png", "a still image"),
    ("jpeg", "a still image"),
    ("audio", "no video stream"),
    ("avi_cut30", ""),
    ("avi_cut50", ""),
    ("avi_cut60", ""),
    ("mkv_cut10", ""),
    ("mkv_cut30", "cut short"),
    ("mp4_cut10", "cannot open"),
    ("mp4_cut30", "cannot open"),
    ("mp4_cut50", "cannot open"),
    ("header_only", ""),
    ("broken_link", "broken symbolic link"),
    ("loop", "symbolic link loop"),
    ("folder", "is a folder"),
    ("pipe", "a named pipe (FIFO), not a regular file"),
    ("zero_device", "a character device, not a regular file"),
    ("bad\x01name", "control character"),
    ("segment_past_end", "its segment"),
    ("segment_after_end", "no video frames"),
    ("id_longer_than_file", "of the 10.00 s its clip id"),
    ("missing", "no such file"),
]


@pytest.mark.parametrize("clip_id, words", VIDEO_CASES, ids=[c[0].replace("\x01", "^A") for c in VIDEO_CASES])
def test_bad_video_is_a_failure_with_its_reason(bad_videos, clip_id, words):
    from moviefib.features.store import open_store

    summary, out = bad_videos
    reasons = {f.clip_id: f.reason for f in summary.failures}
    assert clip_id in reasons, f"{clip_id!r} was not refused"
    assert words in reasons[clip_id]
    with open_store(out) as st:
        assert clip_id not in st
    manifest = {json.loads(x)["clip_id"] for x in Path(summary.failures_path).read_text().splitlines()}
    assert clip_id in manifest


def test_the_good_clip_of_the_bad_folder_is_extracted(bad_videos):
    """The whole clip is kept; a Matroska file cut to half its bytes (2.0 of its header's 4.0 s:
    above the default 0.5 once the 0.25 s slack is added) is kept with a counted warning."""
    from moviefib.features.store import open_store

    summary, out = bad_videos
    assert summary.extracted == 2 and summary.failed == len(VIDEO_CASES)
    assert [w.clip_id for w in summary.warnings] == ["mkv_cut50"]
    assert "file cut short" in summary.warnings[0].reason
    with open_store(out) as st:
        assert sorted(st.clip_ids()) == ["good", "mkv_cut50"] and st.partial_ids() == []
# Files damaged in the middle (bytes zeroed, not cut): the decoder skips the lost frames without an
# error and resumes after them, so first-to-last frame looked whole and the clip passed silently.


def _zero_middle(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    third = len(data) // 3
    data[third: 2 * third] = bytes(third)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix, codec", [(".avi", "mpeg4"), (".mkv", "ffv1")])
def test_a_clip_damaged_in_the_middle_is_not_silently_whole(tmp_path, suffix, codec):
    from moviefib.features.pipeline import ClipSource, judge_clip
    from moviefib.integrity import DurationTolerance
    from moviefib.video import DecodedSpan, iter_frames

    src = write_synthetic_video(tmp_path / f"src{suffix}", 100, codec=codec)
    bad = tmp_path / f"bad{suffix}"
    _zero_middle(src, bad)
    span = DecodedSpan()
    for _ in iter_frames(bad, span=span):
        pass
    verdict = judge_clip(ClipSource("bad", str(bad), expected_duration=4.0), span, DurationTolerance())
    assert verdict.status != "ok", verdict
    assert "missing in the middle" in verdict.reason and verdict.decoded < 3.0
    whole = DecodedSpan()
    for _ in iter_frames(src, span=whole):
        pass
    assert whole.gaps == [] and judge_clip(ClipSource("src", str(src), expected_duration=4.0), whole,
                                           DurationTolerance()).status == "ok"


@pytest.mark.parametrize("name, target", [("movie_is_device", "/dev/zero"), ("movie_is_broken_link", "gone")])
def test_a_whole_movie_that_is_not_a_file_is_named_as_such(tmp_path, name, target):
    """--movies: a <movie>.mkv that is a link to a device or to nothing was passed over, and the clips
    failed with 'no such file' about a <movie>.avi that was never there."""
    from moviefib.features.pipeline import clips_from_lsmdc

    (tmp_path / "0001_A_MOVIE.mkv").symlink_to(target)
    (tmp_path / "d.csv").write_text("0001_A_MOVIE_00.00.01.000-00.00.03.000\t00.00.01.000\t00.00.03.000"
                                    "\t00.00.01.000\t00.00.03.000\ta sentence\n")
    [clip] = clips_from_lsmdc(tmp_path / "d.csv", tmp_path, movies=True)
    assert clip.path.endswith("0001_A_MOVIE.mkv")


def _export_under_a_file_size_limit(store: str, out: str) -> int:
    import resource
    import signal

    from moviefib.cli import main as cli_main

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return cli_main(["features", "export-npy", store, out, "--key", "rgb"])


def test_export_on_a_full_disk_leaves_no_torn_file_and_reruns(tmp_path):
    """A failed .npy write left its temp file (.c_rgb.npy.tmp) in the export folder; the message names
    no '(None)' file."""
    import multiprocessing

    from moviefib.features.store import write_store

    write_store(tmp_path / "s.h5", [("c", np.ones((20, 1024)), np.arange(20.0))], {"extractor": "x"})
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        code = pool.apply(_export_under_a_file_size_limit, (str(tmp_path / "s.h5"), str(tmp_path / "e")))
    assert code == 3
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == []
    assert main(["features", "export-npy", str(tmp_path / "s.h5"), str(tmp_path / "e"), "--key", "rgb"]) == 0
    assert np.load(tmp_path / "e" / "c_rgb.npy").shape == (20, 1024)


@pytest.mark.parametrize("command", ["merge", "import-npy"])
def test_a_store_written_whole_waits_for_the_run_writing_its_output(world, tmp_path, command, capsys):
    """merge/import-npy --overwrite onto the output of a running extraction exited 0, and that run
    replaced their store when it finished: they take the extraction's output lock."""
    from moviefib.fileio import exclusive_lock

    out = tmp_path / "busy.h5"
    argv = (["features", "merge", str(out), str(world / "s1.h5")] if command == "merge" else
            ["features", "import-npy", str(world / "npyok"), str(out), "--key", "rgb"])
    with exclusive_lock(f"{out}.lock", what="an extraction"):
        assert main(argv) == 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is being written by another run" in err, err
    assert not out.exists()
    assert main(argv) == 0 and not Path(f"{out}.lock").exists()
