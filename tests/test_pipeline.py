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
    ClipSource, clips_from_folder, clips_from_lsmdc, extract, iter_batches, parse_shard,
    shard_path)
from moviefib.features.store import StoreError, merge_stores, open_store  # noqa: E402
from moviefib.fileio import LockHeldError, exclusive_lock  # noqa: E402
from moviefib.video import EveryKth, Segment, Windows, write_synthetic_video  # noqa: E402

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
