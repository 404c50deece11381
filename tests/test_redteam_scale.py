"""Red team of issue 14 (training at full scale): what broke under hostile inputs, each fixed.

* train.log_dir that is a file, a named pipe, below a file or cannot be made: one line (exit 3)
  before any work, not SummaryWriter's FileExistsError after the data is read; a tensorboard whose
  writer does not import: exit 5 before any work.
* train.warmup_epochs past the run (1e308 overflowed in the first batch) and train.seed past 2**32 - 1
  (a torch traceback in the first epoch): refused when the config is built.
* a resumed run with another lr / lr_scaling trained at the saved run's rates while metrics.json
  said the new ones.
* a float32 store with values beyond float16's range: both data paths turned them into infinity.
* the lazy path's DataLoader drew from torch's global generator, so with dropout the lazy and the
  resident runs of one seed trained differently.
* shared memory under torchrun: a full /dev/shm killed rank 0 with SIGBUS (the others waited for
  good); a store error on rank 0 left the others waiting; files a killed launch left stayed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from test_resident import WORDS, _datasets, thread_agree, write_resident_toy  # noqa: E402
from test_train import ROOT, TOY_FEATURES, write_toy  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.distributed import DistributedEnv  # noqa: E402
from moviefib.features.store import StoreError, open_store, write_store  # noqa: E402
from moviefib.train import ConfigError, load_config, train  # noqa: E402
from moviefib.training import resident  # noqa: E402
from moviefib.training.resident import FeaturePlan, ResidentMemoryError, share_host_arrays  # noqa: E402

SMALL = ["model.emb_dim=8", "model.hidden=16", "train.batch_size=16", "train.threads=1", "train.progress=false"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("redteam_toy"))


@pytest.fixture(scope="module")
def resident_toy(tmp_path_factory):
    return write_resident_toy(tmp_path_factory.mktemp("redteam_resident"))


def _cli(toy: Path, out: Path, *sets: str, model: str = "text_only") -> list[str]:
    args = ["train", model, "--dataset", str(toy / "dataset"), "--features-dir", str(toy / "features"),
            "--out", str(out), "--no-progress"]
    for s in [*TOY_FEATURES, *SMALL, "train.epochs=1", *sets]:
        args += ["--set", s]
    return args


def _one_line_error(capsys, code: int, want: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == want, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("moviefib train: error: ")
    for w in words:
        assert w in err, err
    return err


# ----------------------------------------------------------------------------------------------- log_dir

def _log_dirs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"file": (afile, "is a file"), "fifo": (fifo, "named pipe"), "below_file": (afile / "tb", str(afile)),
            "cannot_make": (Path("/proc/moviefib-no-such/tb"), "cannot write there")}


@pytest.mark.parametrize("case", ["file", "fifo", "below_file", "cannot_make"])
def test_a_log_dir_that_cannot_be_a_folder_is_one_line_before_any_work(toy, tmp_path, capsys, case):
    log_dir, why = _log_dirs(tmp_path)[case]
    code = cli_main(_cli(toy, tmp_path / "run", f"train.log_dir={json.dumps(str(log_dir))}"))
    _one_line_error(capsys, code, 3, "train.log_dir", why)
    assert not (tmp_path / "run" / "metrics.json").exists()  # nothing trained


def test_a_relative_log_dir_is_relative_to_the_current_folder(toy, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    train(load_config("text_only", [f"data.dataset={json.dumps(str(toy / 'dataset'))}", *SMALL, "train.epochs=1",
                                    "train.out_dir='run'", "train.log_dir='tb'"]))
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))


def test_a_tensorboard_whose_writer_does_not_import_is_exit_5_before_any_work(toy, tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # import fails
    code = cli_main(_cli(toy, tmp_path / "run", f"train.log_dir={json.dumps(str(tmp_path / 'tb'))}",
                         "data.dataset='nowhere'"))
    _one_line_error(capsys, code, 5, "train.log_dir", "moviefib[tensorboard]")


# ----------------------------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("value", ["1e308", "2.5"])
def test_a_warm_up_past_the_run_is_refused(value):
    with pytest.raises(ConfigError, match=r"train.warmup_epochs = [0-9.e+]+: expected at most train.epochs \(2\)"):
        load_config(None, ["train.epochs=2", f"train.warmup_epochs={value}"])
    assert load_config(None, ["train.epochs=2", "train.warmup_epochs=2"]).train.warmup_epochs == 2


def test_a_seed_torch_cannot_take_is_refused():
    with pytest.raises(ConfigError, match=r"train.seed = 4294967296: expected an integer from 0 to 4294967295"):
        load_config(None, ["train.seed=4294967296"])
    assert load_config(None, ["train.seed=4294967295"]).train.seed == 2**32 - 1


def test_a_resumed_run_trains_at_the_rates_of_its_config(toy, tmp_path):
    common = [f"data.dataset={json.dumps(str(toy / 'dataset'))}", f"train.out_dir={json.dumps(str(tmp_path))}",
              *SMALL]
    train(load_config("text_only", [*common, "train.epochs=1"]))
    resume = f"train.resume={json.dumps(str(tmp_path / 'last.pt'))}"
    res = train(load_config("text_only", [*common, "train.epochs=2", "train.lr_scaling=linear",
                                          "train.lr_reference_batch=4", resume]))
    assert res.metrics["lr"]["lr"] == pytest.approx(8e-4)
    assert [h["lr"] for h in res.metrics["history"]] == pytest.approx([2e-4, 8e-4])
    state = torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]
    assert [g["lr"] for g in state["param_groups"]] == pytest.approx([8e-4, 8e-4])


# ----------------------------------------------------------------------------------------------- float16

def _wide_store(path: Path, big: float) -> Path:
    """A store as another tool may write one: float32 features, one value ``big``."""
    import h5py

    write_store(path, [(f"c{k}", np.ones((3, 4)), np.arange(3.0)) for k in range(3)], {})
    with h5py.File(path, "r+") as h5:
        feats = h5["features"][()].astype(np.float32)
        feats[4, 1] = big  # clip c1's second row
        del h5["features"]
        h5.create_dataset("features", data=feats)
    return path


def test_values_beyond_float16_are_refused_on_either_path(tmp_path):
    store = open_store(_wide_store(tmp_path / "wide.h5", 70000.0))
    with pytest.raises(StoreError, match=r"clip c1 holds values beyond float16's range"):
        store.get("c1")
    with pytest.raises(StoreError, match=r"clip c1 holds values beyond float16's range"):
        store.read_rows(0, 9)  # what the resident path loads
    assert store.get("c0").features.dtype == np.float32  # the other clips read as they are
    fine = open_store(_wide_store(tmp_path / "fine.h5", 65504.0))
    assert float(fine.read_rows(0, 9).features.max()) == 65504.0


# ----------------------------------------------------------------------------------------------- equivalence

def test_lazy_and_resident_train_alike_with_dropout(toy, tmp_path):
    """The paper's dropout (0.5) draws from torch's generator: the lazy path must not draw from it."""
    runs = []
    for budget in ("0", "1"):
        out = tmp_path / budget
        res = train(load_config(ROOT / "moviefib" / "recipes" / "text_2d3d.toml", [
            f"data.dataset={json.dumps(str(toy / 'dataset'))}", f"features.dir={json.dumps(str(toy / 'features'))}",
            f"train.out_dir={json.dumps(str(out))}", *TOY_FEATURES, *SMALL, "train.epochs=2",
            f"data.memory_budget={budget}", "model.dropout=0.5", "model.emb_dropout=0.2"]))
        runs.append((res, torch.load(out / "last.pt", weights_only=True)["state_dict"]))
    (lazy, lazy_state), (held, held_state) = runs
    assert (lazy.metrics["data_path"], held.metrics["data_path"]) == ("lazy", "cpu")
    assert lazy.metrics["history"][-1]["val_acc"] == held.metrics["history"][-1]["val_acc"]
    assert [h["train_loss"] for h in lazy.metrics["history"]] == [h["train_loss"] for h in held.metrics["history"]]
    assert all(torch.equal(v, held_state[k]) for k, v in lazy_state.items())


def test_predict_is_the_same_on_either_path(compat_release, toy, monkeypatch):
    from moviefib.train import predict

    release = compat_release
    held = predict(release / "best.pt", toy / "dataset", "test", features_dir=toy / "features")
    monkeypatch.setattr(resident, "make_resident", lambda *a, **k: None)  # the lazy path
    lazy = predict(release / "best.pt", toy / "dataset", "test", features_dir=toy / "features")
    assert held == lazy
    want = dict(line.split("\t") for line in (release / "predictions_test.tsv").read_text().splitlines()[1:])
    assert held == want


# ----------------------------------------------------------------------------------------------- shared memory

def _share(plan, folder: Path, n: int = 2) -> dict[int, object]:
    """What each of ``n`` threads standing for a node's processes got: arrays or the exception."""
    agree, got = thread_agree(n), {}

    def rank(local_rank: int) -> None:
        try:
            got[local_rank] = share_host_arrays(plan, local_rank=local_rank, token="t", agree=agree, folder=folder)
        except (ResidentMemoryError, StoreError) as exc:  # what each rank raised
            got[local_rank] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a rank waits for good"
    return got


def test_no_room_in_shared_memory_is_said_by_every_process(resident_toy, tmp_path, monkeypatch):
    stores, train_set, val = _datasets(resident_toy)
    plan = FeaturePlan.of(stores, [train_set, val])

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    got = _share(plan, tmp_path)
    for r in (0, 1):
        assert isinstance(got[r], ResidentMemoryError), got[r]
        assert "No space left on device" in str(got[r]) and "data.memory_budget" in str(got[r])
    assert not list(tmp_path.iterdir())


def test_a_store_error_on_rank_0_is_raised_by_every_process(resident_toy, tmp_path):
    import h5py

    root, _ = resident_toy
    bad = tmp_path / "bad.h5"
    bad.write_bytes((root / "a.h5").read_bytes())
    with h5py.File(bad, "r+") as h5:
        h5["features"][-1, 0] = np.nan
    from moviefib.data import FIBDataset

    stores = {"2d": open_store(bad)}
    ds = FIBDataset(resident_toy[1], WORDS, stores=stores, max_steps=6)
    shm = tmp_path / "shm"
    shm.mkdir()
    got = _share(FeaturePlan.of(stores, [ds]), shm)
    assert all(isinstance(got[r], StoreError) and "holds NaN" in str(got[r]) for r in (0, 1)), got
    assert not list(shm.iterdir())


def test_files_a_killed_launch_left_are_removed_and_live_ones_kept(resident_toy, tmp_path):
    stores, train_set, _ = _datasets(resident_toy)
    stale = tmp_path / "moviefib-shm-dead-f0"
    stale.write_bytes(b"\0" * 4096)
    live = tmp_path / "moviefib-shm-live-f0"
    live.write_bytes(b"\0" * 4096)
    other = tmp_path / "moviefib-shm-folder"
    other.mkdir()  # not a file of ours
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a running launch holds its files' lock
    try:
        got = _share(FeaturePlan.of(stores, [train_set]), tmp_path)
        assert not isinstance(got[0], Exception) and not isinstance(got[1], Exception)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    finally:
        os.close(fd)


def test_under_torchrun_features_that_do_not_fit_shared_memory_are_read_lazily(resident_toy, monkeypatch):
    stores, train_set, val = _datasets(resident_toy)
    monkeypatch.setattr(resident, "distributed_env", lambda: DistributedEnv(0, 2, 0))
    monkeypatch.setattr(resident, "shared_room", lambda folder: 100)
    assert resident.make_resident([train_set, val], stores, budget_gib=1, device=torch.device("cpu")) is None
    monkeypatch.setattr(resident, "shared_room", lambda folder: 2**30)
    assert resident.make_resident([train_set, val], stores, budget_gib=1, device=torch.device("cpu")) == "cpu"


def test_a_budget_above_the_memory_there_is_one_line(resident_toy, monkeypatch):
    stores, train_set, _ = _datasets(resident_toy)
    features = resident.ResidentFeatures(FeaturePlan.of(stores, [train_set]), "cpu")

    def no_memory(plan, make):
        raise MemoryError("Unable to allocate 900. GiB")

    monkeypatch.setattr(resident, "_host_arrays", no_memory)
    with pytest.raises(ResidentMemoryError, match=r"cannot hold the features in RAM .*lower data.memory_budget"):
        features.streams(torch.device("cpu"))
