"""The HDF5 feature store: round trip, atomicity, refusal of foreign/incomplete files, merge."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("h5py")

from moviefib.features.store import ClipFeatures, StoreError, merge_stores, open_store, write_store  # noqa: E402


def _items(n=5, dim=6, seed=0, prefix="c"):
    rng = np.random.default_rng(seed)
    return [(f"{prefix}{i}", rng.normal(size=(i + 1, dim)), np.arange(i + 1) * 0.5 + 0.25)
            for i in range(n)]


def test_round_trip(tmp_path):
    items = _items()
    path = tmp_path / "f.h5"
    assert write_store(path, items, {"preset": "x"}) == 5
    with open_store(path) as s:
        assert s.clip_ids() == [c for c, _, _ in items]
        assert s.dim == 6 and s.provenance == {"preset": "x", "dim": 6}
        assert "c3" in s and "zz" not in s and len(s) == 5
        for c, f, t in items:
            got = s.get(c)
            assert isinstance(got, ClipFeatures)
            assert got.features.dtype == np.float16 and got.features.shape == f.shape
            np.testing.assert_allclose(got.features, f, atol=2e-3, rtol=2e-3)
            assert got.timestamps.dtype == np.float64
            np.testing.assert_array_equal(got.timestamps, t)
        with pytest.raises(KeyError, match="zz"):
            s.get("zz")


def test_rows_read_in_blocks_are_the_clips_rows(tmp_path):
    # What the resident data path loads: several clips in one read, as get() gives them one by one.
    path = tmp_path / "f.h5"
    write_store(path, _items(), {"preset": "x"})
    with open_store(path) as s:
        offsets = s.offsets()
        assert offsets.tolist() == [0, 1, 3, 6, 10, 15]
        block = s.read_rows(1, 10)
        for i, c in enumerate(s.clip_ids()[1:4], start=1):
            a, b = offsets[i] - 1, offsets[i + 1] - 1
            np.testing.assert_array_equal(block.features[a:b], s.get(c).features)
            np.testing.assert_array_equal(block.timestamps[a:b], s.get(c).timestamps)
        offsets[:] = 0  # a copy: the store's own layout is untouched
        assert s.offsets()[-1] == 15


def test_rows_with_nan_name_their_clip(tmp_path):
    import h5py

    path = tmp_path / "f.h5"
    write_store(path, _items(), {"preset": "x"})
    with h5py.File(path, "r+") as h5:
        h5["features"][7, 2] = np.nan  # a row of c3 (rows 6-9)
    with open_store(path) as s:
        assert s.read_rows(0, 6).features.shape == (6, 6)
        with pytest.raises(StoreError, match="clip c3 holds NaN or infinite values"):
            s.read_rows(2, 15)


def test_pickled_store_reopens(tmp_path):
    path = tmp_path / "f.h5"
    write_store(path, _items(), {})
    s = open_store(path)
    s.get("c1")
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._h5 is None  # the handle is not shipped to the worker
    np.testing.assert_array_equal(s2.get("c2").features, s.get("c2").features)
    s.close(), s2.close()


@pytest.mark.parametrize("bad, match", [
    ([("a", np.zeros((0, 3)), np.zeros(0))], "T >= 1"),
    ([("a", np.zeros((2, 3)), np.zeros(3))], "timestamps"),
    ([("a", np.ones((1, 3)), [0.0]), ("a", np.ones((1, 3)), [0.0])], "twice"),
    ([("a", np.ones((1, 3)), [0.0]), ("b", np.ones((1, 4)), [0.0])], "feature size"),
    ([("a", np.full((1, 3), np.nan), [0.0])], "NaN"),
    ([("a", np.full((1, 3), 1e6), [0.0])], "float16"),
    ([], "at least one clip"),
])
def test_bad_items_write_nothing(tmp_path, bad, match):
    path = tmp_path / "f.h5"
    with pytest.raises(ValueError, match=match):
        write_store(path, bad, {})
    assert list(tmp_path.iterdir()) == []  # no store, no temp file left


def test_failed_rewrite_keeps_old_store(tmp_path):
    path = tmp_path / "f.h5"
    write_store(path, _items(2), {"v": 1})

    def boom():
        yield "x", np.ones((1, 6)), [0.0]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_store(path, boom(), {"v": 2})
    with open_store(path) as s:
        assert s.provenance["v"] == 1 and s.clip_ids() == ["c0", "c1"]


def test_refuses_foreign_and_incomplete_files(tmp_path):
    import h5py

    with pytest.raises(StoreError, match="no such"):
        open_store(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StoreError, match="not a readable HDF5"):
        open_store(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="not a moviefib feature store"):
        open_store(tmp_path / "other.h5")
    path = tmp_path / "f.h5"
    write_store(path, _items(2), {})
    with h5py.File(path, "a") as h5:
        del h5.attrs["complete"]
    with pytest.raises(StoreError, match="incomplete"):
        open_store(path)


def test_merge(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    ia, ib = _items(3, prefix="a"), _items(2, seed=1, prefix="b")
    write_store(a, ia + ib[:1], {"preset": "p", "shard": "0/2"})
    write_store(b, ib, {"preset": "p", "shard": "1/2"})
    assert merge_stores(tmp_path / "m.h5", [a, b]) == 5
    with open_store(tmp_path / "m.h5") as m:
        assert sorted(m.clip_ids()) == sorted(c for c, _, _ in ia + ib)
        assert m.provenance["preset"] == "p" and "shard" not in m.provenance
        np.testing.assert_array_equal(m.get("b1").timestamps, ib[1][2])
    write_store(tmp_path / "c.h5", ia, {"preset": "other"})
    with pytest.raises(ValueError, match="provenance differs in preset"):
        merge_stores(tmp_path / "x.h5", [a, tmp_path / "c.h5"])
    write_store(tmp_path / "d.h5", _items(1, seed=9, prefix="a"), {"preset": "p"})
    with pytest.raises(ValueError, match="a0 differs"):
        merge_stores(tmp_path / "x.h5", [a, tmp_path / "d.h5"])
    assert not (tmp_path / "x.h5").exists()
