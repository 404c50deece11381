"""The resident data path against the lazy one: the same batches for a seed (train and eval mode),
the lazy Collator's alignment and padding, the memory budget's switch, float16 until the device, the
one host copy per node under torchrun, and training that follows the same path either way."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from test_train import ROOT, TINY_MODEL, TINY_TRAIN, TOY_FEATURES, write_toy  # noqa: E402

from moviefib.data import Collator, FIBDataset, WordVocab, nearest_steps, step_draws, step_indices  # noqa: E402
from moviefib.dataset import QuestionItem  # noqa: E402
from moviefib.features.store import StoreError, open_store, write_store  # noqa: E402
from moviefib.training.loop import SharedPermutation, batches, to_device  # noqa: E402
from moviefib.training.resident import (  # noqa: E402
    FeaturePlan,
    ResidentFeatures,
    make_resident,
    nearest_in_clips,
    share_host_arrays,
)

CPU = torch.device("cpu")
WORDS = WordVocab(("<pad>", "<unk>", "<s>", "</s>", *(f"w{i}" for i in range(12))))


def _stream(rng, n_clips: int, most: int, dim: int, ties: bool) -> list:
    """Clips of 1..most steps; their timestamps sorted, some repeated (``ties``), over about 3 s."""
    out = []
    for k in range(n_clips):
        n = int(rng.integers(1, most + 1))
        ts = np.sort(rng.integers(0, 12, n) / 4 if ties else rng.uniform(0, 3, n))
        out.append((f"c{k:02d}", rng.normal(size=(n, dim)), ts))
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_resident_toy(tmp_path_factory.mktemp("resident"))


def write_resident_toy(root: Path) -> tuple[Path, list]:
    """Two stores (2D: up to 60 steps of 5-d; 3D: up to 20 of 7-d, so either can set the clock) of
    24 clips, and 90 questions of 0-6 words a side on them."""
    rng = np.random.default_rng(7)
    write_store(root / "a.h5", _stream(rng, 24, 60, 5, ties=True), {})
    write_store(root / "b.h5", _stream(rng, 24, 20, 7, ties=False), {})
    items = []
    for q in range(90):
        left = tuple(f"w{w}" for w in rng.integers(0, 14, rng.integers(0, 7)))  # w12, w13: unknown words
        right = tuple(f"w{w}" for w in rng.integers(0, 14, rng.integers(0, 7)))
        items.append(QuestionItem(f"q{q}", f"c{int(rng.integers(0, 24)):02d}", left, right, "x", int(q % 5) - 1))
    return root, items


def _stores(root: Path) -> dict:
    return {"2d": open_store(root / "a.h5"), "3d": open_store(root / "b.h5")}


def _datasets(toy, max_steps=6):
    root, items = toy
    stores = _stores(root)
    train = FIBDataset(items, WORDS, stores=stores, max_steps=max_steps, train=True)
    val = FIBDataset(items[::2], WORDS, stores=stores, max_steps=max_steps, train=False)
    return stores, train, val


def _all(dataset, *, order, seed, workers=0, lazy=False, batch_size=16) -> list[dict]:
    if lazy:
        dataset = dataset.reseeded(dataset.draw_seed)  # without its resident copy
    return list(batches(dataset, order=order, batch_size=batch_size, workers=workers, collate=Collator(),
                        seed=seed, device=CPU))


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k


@pytest.mark.parametrize("max_steps", [1, 6, 15])
def test_resident_batches_are_the_lazy_ones_in_train_and_eval_mode(toy, max_steps):
    stores, train, val = _datasets(toy, max_steps)
    assert make_resident([train, val], stores, budget_gib=None, device=CPU) == "cpu"
    for seed in (0, 3):
        order = SharedPermutation(len(train), seed=seed)
        resident = _all(train, order=order, seed=seed)
        _assert_same(_all(train, order=order, seed=seed, lazy=True), resident)
        other = _all(train, order=order, seed=seed + 1)
        assert max_steps == 1 or any(not torch.equal(a["video"], b["video"]) for a, b in zip(resident, other))
    _assert_same(_all(val, order=range(len(val)), seed=0, lazy=True), _all(val, order=range(len(val)), seed=0))


def test_lazy_workers_draw_what_one_process_draws(toy):
    # The draws are a function of (seed, question): not of the worker that reads the question.
    _, train, _ = _datasets(toy)
    order = SharedPermutation(len(train), seed=5)
    _assert_same(_all(train, order=order, seed=5, lazy=True), _all(train, order=order, seed=5, workers=2, lazy=True))


def test_step_draws_depend_on_seed_and_question_alone():
    rows = step_draws(11, np.arange(100))
    assert rows.shape == (100, 2) and rows.dtype == np.uint64
    np.testing.assert_array_equal(step_draws(11, [42, 7]), rows[[42, 7]])
    assert not np.array_equal(step_draws(12, np.arange(100)), rows)
    assert len(np.unique(rows)) == 200
    # While training, every stride from 1 to the largest that fits and every start are drawn.
    picks = step_indices(np.full(4000, 31), 15, draws=step_draws(0, np.arange(4000)))
    assert {int(d) for d in np.diff(picks[:, :2], axis=1).ravel()} == {1, 2}
    assert set(picks[:, 0].tolist()) == set(range(0, 17))


def test_uniform_steps_are_the_linspace_of_earlier_releases():
    # Test-time sampling predicts exactly as before (tests/test_compat.py relies on it).
    n = np.arange(1, 700)
    for m in (1, 2, 15):
        got = step_indices(n, m)
        for i, k in enumerate(n):
            want = np.round(np.linspace(0, k - 1, m)).astype(np.int64) if k > m else np.arange(k)
            np.testing.assert_array_equal(got[i, :min(k, m)], want)


def test_alignment_by_time_is_nearest_steps_for_every_clip():
    rng = np.random.default_rng(1)
    lengths = np.array([1, 2, 3, 8, 1, 40, 5])
    # Steps on a grid of 1/4 s (some repeated), times on one of 1/8 s: many exact ties, which go left.
    ts = np.concatenate([np.sort(rng.integers(0, 12, n) / 4) for n in lengths])
    start = np.cumsum(lengths) - lengths
    at = rng.integers(-4, 28, (len(lengths), 9)) / 8
    got = nearest_in_clips(ts, start, lengths, at, rounds=8)
    for b, (s, n) in enumerate(zip(start, lengths)):
        np.testing.assert_array_equal(got[b], nearest_steps(ts[s:s + n], at[b]))


def test_padding_and_lengths_are_the_collators(toy):
    stores, train, val = _datasets(toy, 15)
    make_resident([val], stores, budget_gib=1, device=CPU)
    idx = [0, 5, 9, 30]
    lazy = Collator()([val[i] for i in idx])
    batch = val.resident.batch(np.array(idx), seed=0, device=CPU)
    _assert_same([lazy], [batch])
    short = int(batch["video_len"].argmin())
    assert batch["video_len"][short] < batch["video"].shape[1]
    assert not batch["video"][short, int(batch["video_len"][short]):].any()  # zeros past the clip's steps
    assert not batch["left"][batch["left_len"].argmin(), int(batch["left_len"].min()):].any()


def test_the_memory_budget_switches_paths(toy, tmp_path):
    stores, train, val = _datasets(toy)
    nbytes = FeaturePlan.of(stores, [train, val]).nbytes
    assert nbytes == sum((sp.rows) * (2 * sp.dim + 8) for sp in FeaturePlan.of(stores, [train, val]).streams) > 0
    assert make_resident([train, val], stores, budget_gib=0, device=CPU) is None
    assert train.resident is None and val.resident is None
    assert make_resident([train, val], stores, budget_gib=(nbytes - 1) / 2**30, device=CPU) is None
    assert make_resident([train, val], stores, budget_gib=nbytes / 2**30, device=CPU) == "cpu"
    assert train.resident.features is val.resident.features  # one copy for both splits


@pytest.mark.parametrize("budget", ["0", "1"])
def test_a_run_records_its_data_path(tmp_path, budget):
    from moviefib.train import load_config, prepare_data

    root = write_toy(tmp_path)
    config = load_config(ROOT / "moviefib" / "recipes" / "text_2d3d.toml", [
        f"data.dataset={json.dumps(str(root / 'dataset'))}", f"features.dir={json.dumps(str(root / 'features'))}",
        f"train.out_dir={json.dumps(str(tmp_path / 'run'))}", *TOY_FEATURES, f"data.memory_budget={budget}"])
    data = prepare_data(config)
    assert data.summary()["data_path"] == ("lazy" if budget == "0" else "cpu")
    assert (data.train.resident is None) == (budget == "0")


def test_video_stays_float16_until_the_device(toy):
    stores, train, _ = _datasets(toy)
    make_resident([train], stores, budget_gib=None, device=CPU)
    for b in (train.resident.batch(np.arange(8), seed=0, device=CPU), Collator()([train[i] for i in range(8)])):
        assert b["video"].dtype == torch.float16
        on = to_device(b, CPU)
        assert on["video"].dtype == torch.float32 and torch.equal(on["video"], b["video"].float())
    assert all(st.features.dtype == torch.float16 for st in train.resident.features.streams(CPU))


def thread_agree(n: int):
    """``share_host_arrays``' ``agree`` for ``n`` threads standing for a node's processes."""
    barrier, said = threading.Barrier(n, timeout=60), []

    def agree(problem):
        if problem is not None:
            said.append(problem)
        barrier.wait()
        first = said[0] if said else None
        barrier.wait()
        return first
    return agree


def test_a_node_shares_one_host_copy(toy, tmp_path):
    stores, train, val = _datasets(toy)
    plan = FeaturePlan.of(stores, [train, val])
    agree = thread_agree(2)
    got: dict[int, tuple] = {}

    def rank(local_rank: int) -> None:
        got[local_rank] = share_host_arrays(plan, local_rank=local_rank, token="t1", agree=agree, folder=tmp_path)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert set(got) == {0, 1} and not list(tmp_path.iterdir())  # mapped by both, then unlinked
    private = ResidentFeatures(plan, "cpu").streams(CPU)
    for k, st in enumerate(private):
        for r in (0, 1):
            np.testing.assert_array_equal(got[r][0][k], st.features.numpy())
            np.testing.assert_array_equal(got[r][1][k], st.timestamps)
    got[0][0][0][0, 0] = 123.0  # one copy: what one process's mapping holds, the other's does
    assert got[1][0][0][0, 0] == 123.0


def test_a_damaged_store_is_refused_when_loaded(toy, tmp_path):
    import h5py

    root, items = toy
    bad = tmp_path / "a.h5"
    bad.write_bytes((root / "a.h5").read_bytes())
    with h5py.File(bad, "r+") as h5:
        h5["features"][-1, 0] = np.inf
    stores = {"2d": open_store(bad)}
    ds = FIBDataset(items, WORDS, stores=stores, max_steps=6)
    make_resident([ds], stores, budget_gib=None, device=CPU)
    with pytest.raises(StoreError, match="clip c23 holds NaN or infinite values"):
        ds.resident.batch(np.arange(4), seed=0, device=CPU)


def test_training_takes_the_same_steps_on_either_path(tmp_path):
    from moviefib.train import load_config, train

    root = write_toy(tmp_path)
    states = []
    for budget in ("0", "1"):
        out = tmp_path / f"run{budget}"
        res = train(load_config(ROOT / "moviefib" / "recipes" / "text_2d3d.toml", [
            f"data.dataset={json.dumps(str(root / 'dataset'))}", f"features.dir={json.dumps(str(root / 'features'))}",
            f"train.out_dir={json.dumps(str(out))}", *TOY_FEATURES, *TINY_MODEL, *TINY_TRAIN, "train.epochs=2",
            "data.max_steps=4", "model.batch_norm=true", f"data.memory_budget={budget}"]))
        assert res.metrics["data_path"] == ("lazy" if budget == "0" else "cpu")
        states.append(torch.load(out / "last.pt", weights_only=True)["state_dict"])
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k


def test_recycled_buffers_give_the_same_batches_one_at_a_time(toy):
    stores, train, _ = _datasets(toy, 15)
    make_resident([train], stores, budget_gib=None, device=CPU)
    order = SharedPermutation(len(train), seed=2)
    fresh = _all(train, order=order, seed=2)
    recycled = [{k: v.clone() for k, v in b.items()} for b in batches(
        train, order=order, batch_size=16, workers=0, collate=Collator(), seed=2, device=CPU, recycle=True)]
    _assert_same(fresh, recycled)
    kept = list(batches(train, order=order, batch_size=16, workers=0, collate=Collator(), seed=2, device=CPU,
                        recycle=True))
    assert kept[0]["video"].data_ptr() == kept[2]["video"].data_ptr()  # a kept batch is overwritten: the contract


_SHARING_SCRIPT = """
import json, sys
from pathlib import Path
import torch, torch.distributed as dist
from moviefib.distributed import distributed_env
from moviefib.features.store import open_store
from moviefib.training.resident import FeaturePlan, ResidentFeatures

class Clips:
    def clip_ids(self):
        return ["c00", "c03", "c04"]

dist.init_process_group("gloo")
stores = {"2d": open_store(sys.argv[1])}
streams = ResidentFeatures(FeaturePlan.of(stores, [Clips()]), "cpu").streams(torch.device("cpu"))
maps = [line.split()[-2] for line in Path("/proc/self/maps").read_text().splitlines()
        if "moviefib-" in line and line.endswith("(deleted)")]
rank = distributed_env().rank
Path(sys.argv[2], f"{rank}.json").write_text(json.dumps({"maps": sorted(set(maps)),
                                                         "sum": float(streams[0].features.double().sum())}))
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").is_file() or not Path("/dev/shm").is_dir(),
                    reason="reads /proc/self/maps; shares through /dev/shm")
def test_torchrun_processes_map_one_shared_copy(toy, tmp_path):
    from test_ddp import torchrun

    root, _ = toy
    script = tmp_path / "share.py"
    script.write_text(_SHARING_SCRIPT)
    torchrun(str(script), str(root / "a.h5"), str(tmp_path), cwd=tmp_path)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["maps"] and ranks[0]["maps"] == ranks[1]["maps"]  # the same files, unlinked, mapped by both
    assert ranks[0]["sum"] == ranks[1]["sum"]
    assert not list(Path("/dev/shm").glob(ranks[0]["maps"][0].rsplit("/", 1)[-1]))
