"""The extraction pipeline: store contents, failures, kill -9 and rerun, shards, npy import/export, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("av")
pytest.importorskip("h5py")

from moviefib.features.pipeline import (  # noqa: E402
    ClipSource,
    clips_from_folder,
    clips_from_lsmdc,
    extract,
    iter_batches,
    parse_shard,
    shard_path,
)
from moviefib.features.store import StoreError, merge_stores, open_store  # noqa: E402
from moviefib.fileio import LockHeldError, exclusive_lock  # noqa: E402
from moviefib.video import EveryKth, FpsFilter, Segment, Uniform, Windows, write_synthetic_video  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ROOT = Path(__file__).resolve().parents[1]

# A tiny random-init extractor, also written to a module for the subprocess of the kill test.
TINY = textwrap.dedent('''
    import time
    import torch
    from moviefib.features.registry import Extractor

    def pre2d(frames):
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)

    def pre3d(frames):
        return pre2d(frames).permute(1, 0, 2, 3)

    class Slow(torch.nn.Module):
        def __init__(self, delay):
            super().__init__()
            self.delay = delay

        def forward(self, x):
            time.sleep(self.delay)
            return x

    class Threads(torch.nn.Module):
        """Records the torch CPU threads of the process that runs the model, and checks its input."""

        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x):
            assert x.dtype == torch.float32, x.dtype
            self.seen.append(torch.get_num_threads())
            return x

    def tiny(kind="2d", window=4, delay=0.0):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 6, 3) if kind == "2d" else torch.nn.Conv3d(3, 6, 3, padding=1)
        pool = torch.nn.AdaptiveAvgPool2d(1) if kind == "2d" else torch.nn.AdaptiveAvgPool3d(1)
        model = torch.nn.Sequential(Slow(delay), conv, pool, torch.nn.Flatten()).eval()
        if kind == "2d":
            return Extractor("tiny2d", "2d", model, pre2d, 6, provenance={"weights": "random-init"})
        return Extractor("tiny3d", "3d", model, pre3d, 6, window=window,
                         provenance={"weights": "random-init"})

    def tiny_split(kind="2d", window=4):
        """A tiny model behind a real FramePreprocess, which the pipeline can split."""
        from moviefib.features.transforms import FramePreprocess

        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 6, 3) if kind == "2d" else torch.nn.Conv3d(3, 6, 3, padding=1)
        pool = torch.nn.AdaptiveAvgPool2d(1) if kind == "2d" else torch.nn.AdaptiveAvgPool3d(1)
        model = torch.nn.Sequential(Threads(), conv, pool, torch.nn.Flatten()).eval()
        pre = FramePreprocess(layout=kind, resize=12, crop=(8, 10), mean=(0.45, 0.4, 0.35),
                              std=(0.2, 0.25, 0.3))
        return Extractor(f"split{kind}", kind, model, pre, 6, window=window if kind == "3d" else 1,
                         provenance={"weights": "random-init", **pre.describe()})
''')


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinymod")
    (d / "tinyext.py").write_text(TINY)
    sys.path.insert(0, str(d))
    import tinyext

    yield d, tinyext
    sys.path.remove(str(d))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """12 lossless clips of 20..42 frames, plus an empty file and a corrupt one."""
    d = tmp_path_factory.mktemp("clips")
    for i in range(12):
        write_synthetic_video(d / f"clip{i:02d}.mkv", 20 + 2 * i, size=(32, 24))
    return d


def _bad_clips(tmp_path):
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    return [ClipSource("empty", str(tmp_path / "empty.avi")),
            ClipSource("corrupt", str(tmp_path / "corrupt.mp4")),
            ClipSource("missing", str(tmp_path / "missing.avi"))]


def test_extract_2d_store_and_failures(tmp_path, tiny_module, clip_folder):
    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder) + _bad_clips(tmp_path)
    seen = []
    out = tmp_path / "f.h5"
    s = extract(clips, out, tinyext.tiny(), EveryKth(3), batch_size=7, num_workers=2,
                stage_seconds=0, on_clip=lambda c, ok: seen.append((c, ok)))
    assert (s.total, s.extracted, s.reused, s.failed) == (15, 12, 0, 3)
    reasons = {f.clip_id: f.reason for f in s.failures}
    assert "empty file" in reasons["empty"] and "no such file" in reasons["missing"]
    assert "corrupt.mp4" in reasons["corrupt"]
    lines = [json.loads(x) for x in Path(s.failures_path).read_text().splitlines()]
    assert {x["clip_id"] for x in lines} == {"empty", "corrupt", "missing"}
    assert sorted(seen) == sorted([(c.clip_id, c.clip_id.startswith("clip")) for c in clips])
    assert not out.with_name("f.h5.staging").exists()
    with open_store(out) as store:
        assert sorted(store.clip_ids()) == [f"clip{i:02d}" for i in range(12)]
        prov = store.provenance
        assert prov["extractor"] == "tiny2d" and prov["dim"] == 6 and prov["weights"] == "random-init"
        assert prov["sampling"] == {"type": "EveryKth", "k": 3} and "torch" in prov["versions"]
        cf = store.get("clip05")  # 30 frames -> frames 0, 3, ..., 27
        np.testing.assert_allclose(cf.timestamps, np.arange(0, 30, 3) / 25)
        # Same features as running the model on each frame alone: batching across clips is exact.
        from moviefib.video import sample

        frames = torch.cat([tinyext.pre2d(torch.from_numpy(f)) for _, f in
                            sample(clip_folder / "clip05.mkv", EveryKth(3))])
        want = tinyext.tiny().model(frames).detach().numpy()
        np.testing.assert_allclose(cf.features, want, atol=2e-3, rtol=2e-3)


def test_extract_3d_windows(tmp_path, tiny_module, clip_folder):
    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder)[:4]
    s = extract(clips, tmp_path / "w.h5", tinyext.tiny("3d"), Windows(4, stride=4), batch_size=3,
                num_workers=1)
    assert s.failed == 0
    with open_store(tmp_path / "w.h5") as store:
        cf = store.get("clip01")  # 22 frames -> 5 full windows + 1 padded
        assert cf.features.shape == (6, 6)
        np.testing.assert_allclose(cf.timestamps, [(4 * i + 1.5) / 25 for i in range(5)] + [20.5 / 25])


def test_a_2d_extractor_refuses_windows_of_several_frames(tmp_path, tiny_module, clip_folder):
    """They were cut to their first frame without a word; one frame a step at a rate is fine."""
    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder)[:2]
    with pytest.raises(ValueError, match=r"^extractor 'tiny2d' is 2D and reads one frame per step; sampling "
                                         r"\{.*\} gives windows of 4 frames: use windows:1,fps=F"):
        extract(clips, tmp_path / "w.h5", tinyext.tiny(), Windows(4, stride=4))
    assert not list(tmp_path.iterdir())  # refused before any file
    s = extract(clips, tmp_path / "one.h5", tinyext.tiny(), Windows(1, fps=5.0), num_workers=0)
    assert s.failed == 0 and s.extracted == 2


@pytest.mark.parametrize("sampling", [EveryKth(3), Uniform(4), Windows(1, fps=5.0), FpsFilter(1.0)],
                         ids=["every", "uniform", "windows1", "ffmpeg-fps"])
def test_a_3d_extractor_refuses_steps_of_one_frame(tmp_path, tiny_module, clip_folder, sampling):
    """Each step was run through the 3D model as a clip of one frame, and stored as its features."""
    _, tinyext = tiny_module
    extractor = tinyext.tiny("3d")
    with pytest.raises(ValueError, match=rf"^extractor 'tiny3d' is 3D and reads windows of frames "
                                         rf"\({extractor.window} for its weights\); sampling \{{.*\}} gives one "
                                         rf"frame per step: use windows:{extractor.window}"):
        extract(clips_from_folder(clip_folder)[:2], tmp_path / "w.h5", extractor, sampling)
    assert not list(tmp_path.iterdir())  # refused before any file


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_normalising_after_the_workers_gives_the_same_features(tmp_path, tiny_module, clip_folder, kind):
    """The CUDA arrangement (uint8 from the workers, normalised by the main process, its threads capped)
    run on the CPU gives the features of the CPU arrangement (normalised in the workers)."""
    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder)[:5]
    sampling = EveryKth(4) if kind == "2d" else Windows(4, stride=4)
    ex = tinyext.tiny_split(kind)
    threads = torch.get_num_threads()
    batch = next(b for b in iter_batches(clips, ex, sampling, batch_size=4, num_workers=0, uint8=True)
                 if b["x"] is not None)
    assert batch["x"].dtype == torch.uint8 and batch["x"].shape[1:] == ((3, 8, 10) if kind == "2d"
                                                                        else (3, 4, 8, 10))
    a = extract(clips, tmp_path / "a.h5", ex, sampling, batch_size=4, num_workers=2)
    seen_a = list(ex.model[0].seen)
    ex.model[0].seen.clear()
    b = extract(clips, tmp_path / "b.h5", ex, sampling, batch_size=3, num_workers=2,
                normalise_on_device=True, main_threads=1)
    assert a.failed == b.failed == 0 and a.extracted == b.extracted == 5
    assert set(seen_a) == {threads} and set(ex.model[0].seen) == {1}  # capped only when asked (CUDA)
    assert torch.get_num_threads() == threads  # and restored
    with open_store(tmp_path / "a.h5") as sa, open_store(tmp_path / "b.h5") as sb:
        assert {k: v for k, v in sa.provenance.items() if k != "created"} == \
               {k: v for k, v in sb.provenance.items() if k != "created"}  # a rerun may resume either
        for c in sa.clip_ids():
            np.testing.assert_array_equal(sa.get(c).features, sb.get(c).features)
            np.testing.assert_array_equal(sa.get(c).timestamps, sb.get(c).timestamps)


def test_uint8_workers_need_a_split_preprocess(tmp_path, tiny_module, clip_folder):
    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder)[:1]
    with pytest.raises(ValueError, match="no uint8 half"):
        iter_batches(clips, tinyext.tiny(), EveryKth(3), uint8=True)
    with pytest.raises(ValueError, match="no uint8 half"):
        extract(clips, tmp_path / "x.h5", tinyext.tiny(), EveryKth(3), normalise_on_device=True)
    with pytest.raises(ValueError, match="main_threads"):
        extract(clips, tmp_path / "x.h5", tinyext.tiny(), EveryKth(3), main_threads=0)
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("MOVIEFIB_TEST_GPU") != "1" or not torch.cuda.is_available(),
                    reason="GPU test: set MOVIEFIB_TEST_GPU=1 on a machine with CUDA")
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_cuda_pipeline_matches_the_cpu(tmp_path, tiny_module, clip_folder, kind):
    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder)[:6]
    sampling = EveryKth(4) if kind == "2d" else Windows(4, stride=4)
    cpu = extract(clips, tmp_path / "cpu.h5", tinyext.tiny_split(kind), sampling, num_workers=2)
    ex = tinyext.tiny_split(kind)
    ex.model.to("cuda")
    threads = torch.get_num_threads()
    gpu = extract(clips, tmp_path / "gpu.h5", ex, sampling, device="cuda", num_workers=2, amp=False)
    assert cpu.extracted == gpu.extracted == 6
    assert set(ex.model[0].seen) == {min(2, threads)} and torch.get_num_threads() == threads
    with open_store(tmp_path / "cpu.h5") as a, open_store(tmp_path / "gpu.h5") as b:
        assert b.provenance["device"] == "cuda"
        for c in a.clip_ids():
            np.testing.assert_allclose(a.get(c).features, b.get(c).features, atol=2e-3, rtol=2e-3)


def _start_slow_extraction(tmp_path, moddir, clip_folder, out, extra_args: str, **popen):
    """A subprocess extracting ``clip_folder`` into ``out`` with a model slowed to 0.4 s per batch."""
    script = tmp_path / "run.py"
    # A background job of a non-interactive shell starts with SIGINT ignored, and Python then keeps
    # it ignored: restore the handler a terminal's Ctrl-C meets, whatever started the test run.
    script.write_text(textwrap.dedent(f'''
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(moddir)!r})
        from tinyext import tiny
        from moviefib.features.pipeline import clips_from_folder, extract
        from moviefib.video import EveryKth
        extract(clips_from_folder({str(clip_folder)!r}), {str(out)!r}, tiny(delay=0.4), EveryKth(2),
                batch_size=4, num_workers=1, {extra_args})
    '''))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(script)], env=env, **popen)


def test_kill_and_rerun(tmp_path, tiny_module, clip_folder):
    moddir, tinyext = tiny_module
    out = tmp_path / "k.h5"
    proc = _start_slow_extraction(tmp_path, moddir, clip_folder, out, "stage_seconds=0", start_new_session=True)
    staging = out.with_name("k.h5.staging")
    deadline = time.time() + 60
    try:
        while time.time() < deadline and len(list(staging.glob("stage-*.npz"))) < 2:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the main process and its workers
        proc.wait()
    assert list(staging.glob("stage-*.npz")), "no staged file within 60 s"
    with pytest.raises(StoreError):
        open_store(out)  # nothing partial reads as a store
    assert out.with_name("k.h5.lock").exists()  # left by the killed run; its lock died with it
    summary = extract(clips_from_folder(clip_folder), out, tinyext.tiny(), EveryKth(2), batch_size=4,
                      num_workers=1)
    assert summary.reused >= 1 and summary.reused + summary.extracted == 12 and summary.failed == 0
    assert not out.with_name("k.h5.lock").exists()
    clean = extract(clips_from_folder(clip_folder), tmp_path / "clean.h5", tinyext.tiny(), EveryKth(2),
                    batch_size=5, num_workers=2)
    with open_store(out) as a, open_store(tmp_path / "clean.h5") as b:
        assert sorted(a.clip_ids()) == sorted(b.clip_ids())
        for c in b.clip_ids():
            np.testing.assert_allclose(a.get(c).features, b.get(c).features, atol=1e-3)
            np.testing.assert_array_equal(a.get(c).timestamps, b.get(c).timestamps)
    assert clean.reused == 0
    # A third run has nothing left to do; other settings are refused, not mixed in.
    again = extract(clips_from_folder(clip_folder), out, tinyext.tiny(), EveryKth(2), num_workers=1)
    assert (again.extracted, again.reused) == (0, 12)
    with pytest.raises(ValueError, match=r"other settings \(sampling.k: 2 -> 3\)"):
        extract(clips_from_folder(clip_folder), out, tinyext.tiny(), EveryKth(3), num_workers=1)


def test_ctrl_c_stages_the_finished_clips(tmp_path, tiny_module, clip_folder):
    """Interrupted, a run keeps the clips it finished since its last staged file."""
    moddir, _ = tiny_module
    out = tmp_path / "int.h5"
    proc = _start_slow_extraction(
        tmp_path, moddir, clip_folder, out,
        'stage_seconds=1000, on_clip=lambda clip_id, ok: print("done", clip_id, flush=True)',
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("done"), proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    staged = list(out.with_name("int.h5.staging").glob("stage-*.npz"))
    assert len(staged) == 1 and not out.exists()
    with np.load(staged[0]) as z:
        assert first.split()[1] in z["clip_ids"]


def test_a_second_run_on_the_same_output_stops_at_once(tmp_path, tiny_module, clip_folder, capsys):
    """While one extraction writes a store, another on the same file is refused and touches nothing."""
    from moviefib.cli import main

    moddir, tinyext = tiny_module
    out = tmp_path / "busy.h5"
    lock = out.with_name("busy.h5.lock")
    staging = out.with_name("busy.h5.staging")
    staging.mkdir()
    in_progress = staging / ".stage-0000000-1.npz.abc.tmp"  # the other run's staged file, being written
    in_progress.write_bytes(b"half")
    with exclusive_lock(lock, what="held by this test"):
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()} on "):
            extract(clips_from_folder(clip_folder), out, tinyext.tiny(), EveryKth(4), num_workers=1)
        code = main(["extract", "--preset", "efficientnet_lite0", "--weights", "none", "--folder",
                     str(clip_folder), "-o", str(out), "--limit", "1", "--no-progress"])
        assert code == 5 and "being written by another extraction" in capsys.readouterr().err
        assert in_progress.exists() and not out.exists()
    assert not lock.exists()
    summary = extract(clips_from_folder(clip_folder), out, tinyext.tiny(), EveryKth(4), num_workers=1)
    assert summary.extracted == 12 and not lock.exists() and not staging.exists()


def test_a_file_system_without_locks_still_extracts(tmp_path, tiny_module, clip_folder, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    _, tinyext = tiny_module
    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "nolock.h5"
    summary = extract(clips_from_folder(clip_folder), out, tinyext.tiny(), EveryKth(4), num_workers=0)
    assert summary.extracted == 12 and not out.with_name("nolock.h5.lock").exists()
    assert "cannot lock files (Function not implemented)" in caplog.text


def test_shards_and_merge(tmp_path, tiny_module, clip_folder):
    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder)
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError):
        parse_shard("3/3")
    out = tmp_path / "s.h5"
    paths = []
    for i in range(3):
        s = extract(clips, out, tinyext.tiny(), EveryKth(4), shard=(i, 3), num_workers=1)
        assert s.output == str(shard_path(out, (i, 3))) and s.total == 4
        paths.append(s.output)
    assert Path(paths[1]).name == "s.shard-1-of-3.h5"
    assert merge_stores(out, paths) == 12
    from moviefib.cli import main

    assert main(["features", "merge", str(tmp_path / "m2.h5"), *paths]) == 0
    with open_store(out) as m:
        assert sorted(m.clip_ids()) == [c.clip_id for c in clips]
        assert m.provenance["sampling"]["k"] == 4


def test_npy_export_import(tmp_path, tiny_module, clip_folder):
    _, tinyext = tiny_module
    out = tmp_path / "n.h5"
    extract(clips_from_folder(clip_folder)[:3], out, tinyext.tiny(), EveryKth(5), num_workers=0)
    from moviefib.cli import main

    assert main(["features", "export-npy", str(out), str(tmp_path / "npy")]) == 0
    files = sorted(p.name for p in (tmp_path / "npy").iterdir())
    assert "clip00_tiny2d.npy" in files and "clip00_timestamps_ms.npy" in files
    arr = np.load(tmp_path / "npy" / "clip01_tiny2d.npy")
    assert arr.dtype == np.float32 and arr.shape == (5, 6)
    assert main(["features", "import-npy", str(tmp_path / "npy"), str(tmp_path / "back.h5"),
                 "--key", "tiny2d"]) == 0
    with open_store(out) as a, open_store(tmp_path / "back.h5") as b:
        assert sorted(b.clip_ids()) == sorted(a.clip_ids())
        for c in a.clip_ids():
            np.testing.assert_array_equal(a.get(c).features, b.get(c).features)
            np.testing.assert_allclose(a.get(c).timestamps, b.get(c).timestamps)
    # Files without timestamps need --step-seconds.
    (tmp_path / "raw").mkdir()
    np.save(tmp_path / "raw" / "v_rgb.npy", np.ones((3, 4), np.float32))
    assert main(["features", "import-npy", str(tmp_path / "raw"), str(tmp_path / "r.h5"),
                 "--key", "rgb"]) == 3
    assert main(["features", "import-npy", str(tmp_path / "raw"), str(tmp_path / "r.h5"),
                 "--key", "rgb", "--step-seconds", "0.64"]) == 0
    with open_store(tmp_path / "r.h5") as r:
        np.testing.assert_allclose(r.get("v").timestamps, [0.32, 0.96, 1.6])


def test_lsmdc_inputs(tmp_path, tiny_module):
    from moviefib.formats import DescriptionRow, write_descriptions

    _, tinyext = tiny_module
    movie = "3001_TINY_MOVIE"
    ids = [f"{movie}_00.00.01.000-00.00.02.000", f"{movie}_00.00.03.000-00.00.04.500"]
    rows = [DescriptionRow(ids[0], 1.0, 2.0, 1.0, 2.0, "a sentence"),
            DescriptionRow(ids[0], 1.0, 2.0, 1.0, 2.0, "another on the same clip"),
            DescriptionRow(ids[1], 3.0, 4.5, 3.0, 4.5, "third")]
    desc = write_descriptions(tmp_path / "d.csv", rows) and tmp_path / "d.csv"
    (tmp_path / "clips" / movie).mkdir(parents=True)
    write_synthetic_video(tmp_path / "clips" / movie / f"{ids[0]}.avi", 25)
    clips = clips_from_lsmdc(desc, tmp_path / "clips")
    assert [c.clip_id for c in clips] == ids and clips[1].segment is None
    s = extract(clips, tmp_path / "c.h5", tinyext.tiny(), EveryKth(5), num_workers=0)
    assert s.extracted == 1 and s.failures[0].clip_id == ids[1]  # its clip file is absent
    # Whole movie: clips cut at the extracted start/end.
    (tmp_path / "movies").mkdir()
    write_synthetic_video(tmp_path / "movies" / f"{movie}.mkv", 150)
    clips = clips_from_lsmdc(desc, tmp_path / "movies", movies=True)
    assert clips[1].segment == Segment(3.0, 4.5)
    s = extract(clips, tmp_path / "m.h5", tinyext.tiny(), EveryKth(1), num_workers=1)
    assert s.failed == 0
    with open_store(tmp_path / "m.h5") as st:
        ts = st.get(ids[1]).timestamps
        assert len(ts) == 38 and ts[0] == pytest.approx(0.0) and ts[-1] == pytest.approx(37 / 25)


def test_cli_errors(tmp_path, clip_folder, capsys):
    from moviefib.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["extract", "--preset", "efficientnet_lite0", "--weights", "none", "--folder", str(clip_folder),
                 "-o", str(blocker / "x.h5"), "--no-progress"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write {blocker / 'x.h5'}" in err

    assert main(["extract", "--preset", "nope", "--folder", str(tmp_path), "-o", "x.h5"]) == 2
    assert main(["extract", "--preset", "paper_2d", "--folder", str(tmp_path / "none"),
                 "-o", str(tmp_path / "x.h5")]) == 3
    assert main(["extract", "--preset", "paper_2d", "--clips", str(tmp_path), "-o", "x.h5"]) == 2
    assert main(["extract", "--extractor", "tiny", "--sampling", "every:0", "--folder", str(tmp_path),
                 "-o", "x.h5"]) == 2
    assert main(["features", "merge", str(tmp_path / "o.h5"), str(tmp_path / "none.h5")]) == 3


@pytest.mark.skipif(not (SHARED / "videos").is_dir(), reason="../shared/videos is absent")
def test_real_videos_through_pipeline(tmp_path, tiny_module):
    _, tinyext = tiny_module
    s = extract(clips_from_folder(SHARED / "videos"), tmp_path / "r.h5", tinyext.tiny("3d"),
                Windows(8, fps=12.5), batch_size=8, num_workers=2, short_side=32)
    assert s.failed == 0 and s.extracted == 5
    with open_store(tmp_path / "r.h5") as st:
        assert st.get("cityCC0").timestamps[0] == pytest.approx(3.5 * 0.08)


# ---------------------------------------------------------------------------------------------------
# Trust: partial clips, source identity on resume, kept failure records, paths, one-line errors


def _lsmdc_clip(tmp_path, frames: int, *, seconds: float = 4.0, movie: str = "3001_TINY_MOVIE",
                start: float = 1.0) -> ClipSource:
    """An LSMDC-like clip file (mpeg4 in .avi) of ``frames`` frames whose row says ``seconds``."""
    from moviefib.formats import format_timestamp as ft

    clip_id = f"{movie}_{ft(start)}-{ft(start + seconds)}"
    path = tmp_path / "clips" / movie / f"{clip_id}.avi"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_synthetic_video(path, frames, codec="mpeg4")
    return ClipSource(clip_id, str(path), expected_duration=seconds)


def _truncate(path, fraction: float) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])


def test_a_truncated_clip_is_refused_and_allow_partial_keeps_it_marked(tmp_path, tiny_module):
    _, tinyext = tiny_module
    whole = _lsmdc_clip(tmp_path, 100)
    cut = _lsmdc_clip(tmp_path, 100, start=10.0)
    _truncate(cut.path, 0.5)
    s = extract([whole, cut], tmp_path / "t.h5", tinyext.tiny(), EveryKth(5), num_workers=0)
    assert (s.extracted, s.failed) == (1, 1)
    f = s.failures[0]
    assert f.clip_id == cut.clip_id and f.expected == 4.0 and f.decoded < 2.0 and "cut short" in f.reason
    record = json.loads(Path(s.failures_path).read_text())
    assert record["expected"] == 4.0 and record["expected_from"] == "clip id" and record["decoded"] < 2.0
    with open_store(tmp_path / "t.h5") as st:
        assert st.clip_ids() == [whole.clip_id] and st.partial_ids() == []
        assert st.record(whole.clip_id).decoded == pytest.approx(4.0)
    kept = extract([whole, cut], tmp_path / "p.h5", tinyext.tiny(), EveryKth(5), num_workers=0,
                   allow_partial=True)
    assert (kept.extracted, kept.failed, kept.partial) == (2, 0, 1) and kept.failures_path is None
    with open_store(tmp_path / "p.h5") as st:
        assert st.partial_ids() == [cut.clip_id] and st.record(cut.clip_id).partial
        assert not st.record(whole.clip_id).partial


def test_a_clip_somewhat_short_is_kept_with_a_counted_warning(tmp_path, tiny_module):
    _, tinyext = tiny_module
    clip = _lsmdc_clip(tmp_path, 75, seconds=4.0)  # 3 s of the 4 s its row says
    s = extract([clip], tmp_path / "w.h5", tinyext.tiny(), EveryKth(5), num_workers=0)
    assert (s.extracted, s.failed, len(s.warnings)) == (1, 0, 1)
    assert "somewhat short" in s.warnings[0].reason


def test_a_truncated_folder_clip_is_refused_by_its_header(tmp_path, tiny_module):
    _, tinyext = tiny_module
    folder = tmp_path / "f"
    folder.mkdir()
    write_synthetic_video(folder / "whole.avi", 100, codec="mpeg4")
    write_synthetic_video(folder / "cut.avi", 100, codec="mpeg4")
    _truncate(folder / "cut.avi", 0.5)
    s = extract(clips_from_folder(folder), tmp_path / "f.h5", tinyext.tiny(), EveryKth(5), num_workers=0)
    assert [f.clip_id for f in s.failures] == ["cut"] and s.extracted == 1
    assert s.failures[0].expected_from == "header" and "declare" in s.failures[0].reason


def test_a_segment_past_the_movie_end_is_short(tmp_path, tiny_module):
    _, tinyext = tiny_module
    movie = write_synthetic_video(tmp_path / "m.mkv", 100)  # 4 s
    clips = [ClipSource("inside", str(movie), Segment(1.0, 3.0), expected_duration=2.0),
             ClipSource("past", str(movie), Segment(3.5, 6.5), expected_duration=3.0)]
    s = extract(clips, tmp_path / "m.h5", tinyext.tiny(), EveryKth(5), num_workers=0)
    assert [f.clip_id for f in s.failures] == ["past"] and s.failures[0].expected_from == "segment"


def test_a_png_named_avi_is_not_a_one_frame_clip(tmp_path, tiny_module):
    import av

    _, tinyext = tiny_module
    png = tmp_path / "still.avi"
    with av.open(str(tmp_path / "x.png"), "w", format="image2") as c:
        st = c.add_stream("png", rate=1)
        st.width, st.height, st.pix_fmt = 16, 16, "rgb24"
        for pkt in st.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
            c.mux(pkt)
    (tmp_path / "x.png").rename(png)
    s = extract([ClipSource("still", str(png))], tmp_path / "s.h5", tinyext.tiny(), EveryKth(1), num_workers=0)
    assert s.extracted == 0 and "a still image" in s.failures[0].reason


def test_a_repaired_file_is_redone_on_rerun(tmp_path, tiny_module):
    _, tinyext = tiny_module
    a = _lsmdc_clip(tmp_path, 100)
    b = _lsmdc_clip(tmp_path, 100, start=10.0)
    out = tmp_path / "r.h5"
    _truncate(b.path, 0.8)  # somewhat short: kept with a warning, features of the first 80 %
    first = extract([a, b], out, tinyext.tiny(), EveryKth(5), num_workers=0)
    assert first.extracted == 2
    with open_store(out) as st:
        before = len(st.get(b.clip_id).features)
    write_synthetic_video(b.path, 100, codec="mpeg4")  # repaired
    again = extract([a, b], out, tinyext.tiny(), EveryKth(5), num_workers=0)
    assert (again.extracted, again.reused, again.redone) == (1, 1, 1)
    with open_store(out) as st:
        assert len(st.get(b.clip_id).features) == 20 > before
        assert st.record(b.clip_id).source.size == os.path.getsize(b.path)
    # A copy of the dataset (new times, same bytes) is re-hashed, not redone.
    for c in (a, b):
        os.utime(c.path, ns=(time.time_ns() + 10**9,) * 2)
    third = extract([a, b], out, tinyext.tiny(), EveryKth(5), num_workers=0)
    assert (third.extracted, third.reused, third.redone) == (0, 2, 0)
    with open_store(out) as st:  # the new times are recorded: the next rerun hashes nothing
        assert st.record(a.clip_id).source.mtime_ns == os.stat(a.path).st_mtime_ns


def test_a_limited_rerun_keeps_the_failure_records_it_did_not_retry(tmp_path, tiny_module):
    _, tinyext = tiny_module
    good = _lsmdc_clip(tmp_path, 100)
    missing = ClipSource("3001_TINY_MOVIE_00.01.00.000-00.01.04.000", str(tmp_path / "nope.avi"), None, 4.0)
    out = tmp_path / "l.h5"
    s = extract([good, missing], out, tinyext.tiny(), EveryKth(5), num_workers=0)
    assert s.failed == 1
    again = extract([good], out, tinyext.tiny(), EveryKth(5), num_workers=0)  # like --limit 1
    assert (again.failed, again.failures_kept) == (0, 1)
    lines = Path(again.failures_path).read_text().splitlines()
    assert [json.loads(x)["clip_id"] for x in lines] == [missing.clip_id]
    # Once the clip is tried again and succeeds, its record goes.
    write_synthetic_video(missing.path, 100, codec="mpeg4")
    last = extract([good, missing], out, tinyext.tiny(), EveryKth(5), num_workers=0)
    assert last.extracted == 1 and last.failures_path is None
    assert not out.with_name("l.h5.failures.jsonl").exists()


def test_a_version_1_store_still_loads_and_resumes(tmp_path, tiny_module, clip_folder):
    import h5py

    _, tinyext = tiny_module
    clips = clips_from_folder(clip_folder)
    out = tmp_path / "v1.h5"
    extract(clips[:4], out, tinyext.tiny(), EveryKth(4), num_workers=0)
    with h5py.File(out, "r+") as h5:  # what today's main wrote: no records, version 1
        del h5["records"]
        h5.attrs["format_version"] = 1
    with open_store(out) as st:
        assert st.record(clips[0].clip_id) is None and len(st) == 4
    s = extract(clips[:6], out, tinyext.tiny(), EveryKth(4), num_workers=0)
    assert (s.reused, s.extracted, s.redone) == (4, 2, 0)
    with open_store(out) as st:  # the old clips are trusted and now carry their file's identity
        assert st.record(clips[0].clip_id).source.size == os.path.getsize(clips[0].path)


def test_ids_cannot_leave_their_root(tmp_path, tiny_module):
    from moviefib.features.pipeline import export_npy
    from moviefib.features.store import write_store

    store = tmp_path / "evil.h5"
    write_store(store, [("../escape", np.ones((2, 3)), np.arange(2.0)),
                        ("ok", np.ones((2, 3)), np.arange(2.0))], {"extractor": "x"})
    with pytest.raises(ValueError, match=r"'\.\./escape'.*nothing exported"):
        export_npy(store, tmp_path / "out")
    assert not (tmp_path / "escape_x.npy").exists() and not (tmp_path / "out").exists()
    rows_file = tmp_path / "d.tsv"
    rows_file.write_text("0001_A_MOVIE/../../x_00.00.01.000-00.00.03.000\t00.00.01.000\t00.00.03.000\t"
                         "00.00.01.000\t00.00.03.000\ta sentence\n")
    with pytest.raises(ValueError, match="x_00.00.01"):
        clips_from_lsmdc(rows_file, tmp_path)


def test_folder_reports_broken_links_and_folders_named_like_videos(tmp_path, tiny_module):
    _, tinyext = tiny_module
    folder = tmp_path / "tree"
    folder.mkdir()
    write_synthetic_video(folder / "good.mkv", 20)
    (folder / "broken.avi").symlink_to(tmp_path / "gone.avi")
    (folder / "loop.avi").symlink_to(folder / "loop.avi")
    (folder / "dir.avi").mkdir()
    s = extract(clips_from_folder(folder), tmp_path / "t.h5", tinyext.tiny(), EveryKth(5), num_workers=0)
    reasons = {f.clip_id: f.reason for f in s.failures}
    assert s.extracted == 1 and set(reasons) == {"broken", "loop", "dir"}
    assert "broken symbolic link" in reasons["broken"] and "symbolic link loop" in reasons["loop"]
    assert "is a folder" in reasons["dir"]


def test_a_partial_video_tree_is_one_summary_line(tmp_path, tiny_module, caplog):
    _, tinyext = tiny_module
    present = _lsmdc_clip(tmp_path, 50, seconds=2.0)
    absent = [ClipSource(f"3001_TINY_MOVIE_00.02.{i:02d}.000-00.02.{i + 1:02d}.000",
                         str(tmp_path / "clips" / f"a{i}.avi"), None, 1.0) for i in range(30)]
    caplog.set_level("INFO")
    s = extract([present, *absent], tmp_path / "p.h5", tinyext.tiny(), EveryKth(5), num_workers=0)
    assert s.failed == 30 and s.extracted == 1
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and "30 of 31 clips failed: 30 no such file (first: " in lines[0]
    assert "and 27 more" in lines[0]
    assert len(Path(s.failures_path).read_text().splitlines()) == 30


def test_torchcodec_without_ffmpeg_stops_at_once(tmp_path, tiny_module, clip_folder, capsys, monkeypatch):
    from moviefib import video
    from moviefib.cli import main

    _, tinyext = tiny_module
    monkeypatch.setattr(video, "backend_problem",
                        lambda name: ("torchcodec cannot load FFmpeg's shared libraries"
                                      if name == "torchcodec" else None))
    code = main(["extract", "--preset", "efficientnet_lite0", "--weights", "none", "--folder", str(clip_folder),
                 "-o", str(tmp_path / "x.h5"), "--decoder", "torchcodec", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 5 and err.count("\n") == 0 and "cannot load FFmpeg" in err
    assert not (tmp_path / "x.h5.staging").exists()
    with pytest.raises(video.DecoderUnavailableError):  # the library refuses before any clip too
        extract(clips_from_folder(clip_folder), tmp_path / "y.h5", tinyext.tiny(), EveryKth(4),
                backend="torchcodec", num_workers=0)


def test_the_real_torchcodec_check(tmp_path, clip_folder, capsys):
    """Where torchcodec cannot decode, extract says so in one line; where it can, it extracts."""
    from moviefib.cli import main
    from moviefib.video import backend_problem

    code = main(["extract", "--preset", "efficientnet_lite0", "--weights", "none", "--folder", str(clip_folder),
                 "-o", str(tmp_path / "x.h5"), "--decoder", "torchcodec", "--no-progress", "--limit", "1"])
    err = capsys.readouterr().err
    if backend_problem("torchcodec") is None:
        assert code == 0
    else:
        assert code == 5 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_core_only_install_names_the_extra(tmp_path, capsys, monkeypatch):
    from moviefib.cli import main

    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    code = main(["extract", "--preset", "paper_2d", "--folder", str(tmp_path), "-o", str(tmp_path / "x.h5")])
    err = capsys.readouterr().err.strip()
    assert code == 5 and "pip install 'moviefib[features]'" in err and err.count("\n") == 0
