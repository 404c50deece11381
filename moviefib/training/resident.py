"""The resident data path: a run's features held in memory, whole batches made by vectorised indexing.

The lazy path (:class:`moviefib.data.FIBDataset` through a DataLoader) reads each question's clip from
HDF5 and pads samples one by one in Python. When the features of a run's clips fit its memory budget,
they are read once instead:

* :class:`FeaturePlan`: which rows of each stream's store the clips of the run need, and their size;
* :func:`residency`: where they go within ``data.memory_budget`` (GPU memory on CUDA, else RAM), or
  None (the lazy path);
* :class:`ResidentFeatures`: per stream one contiguous float16 array (plus a zero row for padding) with
  each clip's first row and step count and the timestamps; loaded on first use, and under torchrun on
  the CPU once per node in shared memory (:func:`share_host_arrays`), on CUDA in blocks straight to
  each process's GPU;
* :class:`ResidentSplit`: one dataset's questions pre-encoded into padded word index arrays; its
  :meth:`~ResidentSplit.batch` builds the batch of a list of question indices with numpy and torch
  indexing only: the step rule of :func:`moviefib.data.step_indices` (the lazy path's, so both paths
  draw the same steps from :func:`moviefib.data.step_draws`), the timestamp alignment of
  :func:`moviefib.data.nearest_steps` as a segmented binary search, padding and lengths. Video stays
  float16; the training loop casts it on the device.

Models that tokenise raw words (MiniLM's ``tokenize``) keep the lazy path.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..devices import DeviceUnavailableError
from ..distributed import distributed_env
from ..features.store import StoreError

if TYPE_CHECKING:
    from ..data import FIBDataset

log = logging.getLogger(__name__)

GIB = 2**30
# Without data.memory_budget: the features are held when they take at most this share of the memory
# they go to (the rest is the model's, the optimiser's, the batches' and the page cache's).
AUTO_BUDGET_SHARE = 0.5
# Rows read from a store at once while loading: about 64 MB of 1024-d float16 steps.
_BLOCK_ROWS = 32768
# The files a node's processes share the features through (shared_folder): prefix, launch token, array.
_SHARED_PREFIX = "moviefib-shm-"


# ----------------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class StreamPlan:
    """The rows of one store that a run needs.

    Attributes:
        store_index: int64 ``[C]``, each resident clip's index in the store.
        start: int64 ``[C]``, its first row in the resident array (clips placed in store order, so
            that consecutive store clips are read and written as one block).
        length: int64 ``[C]``, its steps.
        rows: the resident array's rows (without the padding row). dim: the feature size.
    """

    store_index: np.ndarray
    start: np.ndarray
    length: np.ndarray
    rows: int
    dim: int

    def runs(self, offsets: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """``(store row, resident row, rows)`` of each block to copy: consecutive store clips
        joined, cut at :data:`_BLOCK_ROWS`."""
        order = np.argsort(self.store_index)
        sidx = self.store_index[order]
        breaks = np.flatnonzero(np.diff(sidx) != 1) + 1
        for first, last in zip(np.r_[0, breaks], np.r_[breaks, len(sidx)]):
            a, b, dest = int(offsets[sidx[first]]), int(offsets[sidx[last - 1] + 1]), int(self.start[order[first]])
            for lo in range(a, b, _BLOCK_ROWS):
                yield lo, dest + lo - a, min(b, lo + _BLOCK_ROWS) - lo


def _stream_plan(store, clip_ids: Sequence[str]) -> StreamPlan:
    index = {c: i for i, c in enumerate(store.clip_ids())}
    sidx = np.array([index[c] for c in clip_ids], dtype=np.int64)
    offsets = store.offsets()
    length = offsets[sidx + 1] - offsets[sidx]
    order = np.argsort(sidx)
    start = np.empty_like(length)
    start[order] = np.cumsum(length[order]) - length[order]
    return StreamPlan(sidx, start, length, int(length.sum()), int(store.dim))


@dataclass(frozen=True)
class FeaturePlan:
    """What a run holds resident: the clips its datasets read, in each stream's store.

    Attributes:
        stores: stream -> store, in the model's order. clip_ids: the resident clips.
        streams: one :class:`StreamPlan` per store.
    """

    stores: Mapping
    clip_ids: tuple[str, ...]
    streams: tuple[StreamPlan, ...]

    @classmethod
    def of(cls, stores: Mapping, datasets: Sequence[FIBDataset]) -> FeaturePlan:
        clips = tuple(sorted({c for ds in datasets for c in ds.clip_ids()})) if stores else ()
        return cls(dict(stores), clips, tuple(_stream_plan(s, clips) for s in stores.values()))

    @property
    def nbytes(self) -> int:
        """Bytes of the resident arrays: float16 features and float64 timestamps."""
        return sum(p.rows * (2 * p.dim + 8) for p in self.streams)


def _size(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 2**20:.2f} MiB"


def available_memory() -> int:
    """Bytes of RAM available to a new allocation (Linux: MemAvailable, else the free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def residency(nbytes: int, *, budget_gib: float | None, device: torch.device) -> str | None:
    """Where a run's resident features go: ``"cuda"`` (the GPU of each process), ``"cpu"``, or None
    for the lazy path. ``budget_gib`` (``data.memory_budget``) bounds them in GiB (0: always lazy);
    None: at most :data:`AUTO_BUDGET_SHARE` of the GPU's memory on CUDA, else of the RAM available."""
    where = _within_budget(nbytes, budget_gib=budget_gib, device=device)
    if where == "cpu" and distributed_env().distributed:
        # Under torchrun the node's copy goes to shared memory: files a killed launch left there are
        # removed first, and features that do not fit what is free there are read lazily (a tmpfs
        # filling up while it is written kills the process).
        root = shared_folder()
        remove_stale_files(root)
        room = shared_room(root)
        if room is not None and nbytes > room:
            log.warning("features read lazily: %.2f GiB do not fit the %.2f GiB free in %s", nbytes / GIB,
                        room / GIB, root)
            return None
    return where


def _within_budget(nbytes: int, *, budget_gib: float | None, device: torch.device) -> str | None:
    if budget_gib is not None:
        return (device.type if device.type == "cuda" else "cpu") if nbytes <= budget_gib * GIB else None
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(distributed_env().local_rank).total_memory
        if nbytes <= AUTO_BUDGET_SHARE * total:
            return "cuda"
    return "cpu" if nbytes <= AUTO_BUDGET_SHARE * available_memory() else None


# ----------------------------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class StreamRows:
    """One stream held in memory.

    Attributes:
        features: float16 ``[R + 1, D]`` (CPU or CUDA); row R is zeros, the padding of short clips.
        timestamps: float64 ``[R]``. start, length: int64 ``[C]``, each resident clip's rows.
        search_steps: binary-search rounds that find any time within the longest clip.
    """

    features: torch.Tensor
    timestamps: np.ndarray
    start: np.ndarray
    length: np.ndarray
    search_steps: int

    @property
    def pad_row(self) -> int:
        return len(self.timestamps)


def _fill(plan: FeaturePlan, features: Sequence, timestamps: Sequence[np.ndarray]) -> None:
    """Copy the planned rows of each store into ``features[k]`` (numpy or torch, padding row zeroed)
    and ``timestamps[k]``, block by block (a GPU never waits for a whole host copy)."""
    for store, sp, dest, ts in zip(plan.stores.values(), plan.streams, features, timestamps):
        offsets = store.offsets()
        for lo, at, n in sp.runs(offsets):
            got = store.read_rows(lo, lo + n)
            ts[at:at + n] = got.timestamps
            block = np.asarray(got.features, dtype=np.float16)
            if isinstance(dest, np.ndarray):
                dest[at:at + n] = block
            else:
                dest[at:at + n].copy_(torch.from_numpy(block))
        dest[sp.rows] = 0


def _host_arrays(plan: FeaturePlan, make: Callable[[str, tuple, np.dtype], np.ndarray]) -> tuple[list, list]:
    feats = [make(f"f{k}", (sp.rows + 1, sp.dim), np.float16) for k, sp in enumerate(plan.streams)]
    ts = [make(f"t{k}", (sp.rows,), np.float64) for k, sp in enumerate(plan.streams)]
    return feats, ts


class ResidentMemoryError(DeviceUnavailableError):
    """The memory the features were to be held in cannot take them: the node's shared memory under
    torchrun (no room, a folder that cannot be written; said on every process), the RAM or the GPU
    (a ``data.memory_budget`` above what is there). A resource of the machine (exit 5)."""


def shared_folder(folder: str | os.PathLike | None = None) -> Path:
    """Where a node's processes share the features: ``/dev/shm``, else the temporary folder."""
    return Path(folder or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()))


def shared_room(folder: Path) -> int | None:
    """Bytes free in ``folder`` (None when it cannot be asked)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def remove_stale_files(folder: Path) -> list[Path]:
    """Remove the shared files that a killed launch left (no live process holds their lock; a launch
    holds it from creation until it unlinks them), so that they stop taking the node's memory."""
    removed = []
    for path in folder.glob(f"{_SHARED_PREFIX}*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live launch holds it
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.warning("removed %d shared-memory files a killed run left in %s", len(removed), folder)
    return removed


def _create_shared(path: Path, nbytes: int) -> int:
    """Create ``path`` with ``nbytes`` allocated, locked (see :func:`remove_stale_files`); its fd. The
    space is allocated now: a tmpfs that fills while the mapping is written kills the process with
    SIGBUS, where ``posix_fallocate`` says ENOSPC."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if nbytes:
            os.posix_fallocate(fd, 0, nbytes)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


def _fill_shared(plan: FeaturePlan, root: Path, token: str, paths: list[Path], fds: list[int]) -> tuple[list, list]:
    """Local rank 0's part: the files created, allocated and filled (paths and fds appended to)."""
    def make(name, shape, dtype):
        paths.append(root / f"{_SHARED_PREFIX}{token}-{name}")
        fds.append(_create_shared(paths[-1], int(np.prod(shape)) * np.dtype(dtype).itemsize))
        return np.memmap(paths[-1], dtype=dtype, mode="r+", shape=shape)

    arrays = _host_arrays(plan, make)
    _fill(plan, *arrays)
    return arrays


def share_host_arrays(plan: FeaturePlan, *, local_rank: int, token: str,
                      agree: Callable[[tuple[str, str] | None], tuple[str, str] | None],
                      folder: str | os.PathLike | None = None) -> tuple[list, list]:
    """The planned arrays, one copy per node: the node's local rank 0 fills files in shared memory
    (:func:`shared_folder`) that every local process maps; the files are unlinked once all have mapped
    them (the mappings stay). ``token`` names this launch's files (the same on every process).
    ``agree`` waits for every process and gives each the first problem any process met (``(kind,
    message)``, or None): a store that cannot be read or no room, said by every process (the others
    would wait for good at the next collective call otherwise)."""
    root, paths, fds, problem = shared_folder(folder), [], [], None
    if local_rank == 0:
        remove_stale_files(root)
        try:
            arrays = _fill_shared(plan, root, token, paths, fds)
        except StoreError as exc:
            problem = ("store", str(exc))
        except OSError as exc:  # ENOSPC from posix_fallocate, a folder that cannot be written
            problem = ("memory", f"{root}: cannot hold the features shared by this node's processes "
                                 f"({_size(plan.nbytes)}: {exc.strerror or exc}); lower "
                                 f"data.memory_budget (0: read them lazily) or give {root} more room")
        if problem is not None:
            _release(paths, fds)
    problem = agree(problem)
    if problem is not None:
        _release(paths, fds)
        raise (StoreError if problem[0] == "store" else ResidentMemoryError)(problem[1])
    if local_rank != 0:
        arrays = _host_arrays(plan, lambda name, shape, dtype: np.memmap(
            root / f"{_SHARED_PREFIX}{token}-{name}", dtype=dtype, mode="r+", shape=shape))
    agree(None)  # every process has mapped them
    _release(paths, fds)
    agree(None)  # and on return, on every process, the files are gone
    return arrays


def _release(paths: list[Path], fds: list[int]) -> None:
    """Unlink the shared files and drop their locks (the mappings stay)."""
    for path in paths:
        path.unlink(missing_ok=True)
    for fd in fds:
        os.close(fd)
    paths.clear()
    fds.clear()


def _launch_token() -> str:
    """A name for this launch's shared files, drawn by rank 0 and sent to every process."""
    import torch.distributed as dist

    box = [uuid.uuid4().hex if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _first_problem(problem: tuple[str, str] | None) -> tuple[str, str] | None:
    """Every process's problem gathered (a barrier too): the first one met, for all to raise."""
    import torch.distributed as dist

    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, problem)
    return next((p for p in every if p is not None), None)


def _load_arrays(plan: FeaturePlan, where: str, device: torch.device) -> tuple[list, list]:
    """The filled arrays of ``plan``: on the GPU, shared between a node's processes, or private."""
    import torch.distributed as dist

    env = distributed_env()
    if env.distributed and where == "cpu" and dist.is_available() and dist.is_initialized():
        return share_host_arrays(plan, local_rank=env.local_rank, token=_launch_token(), agree=_first_problem)
    try:
        if where == "cuda":
            feats = [torch.empty((sp.rows + 1, sp.dim), dtype=torch.float16, device=device) for sp in plan.streams]
            ts = [np.empty(sp.rows, dtype=np.float64) for sp in plan.streams]
        else:
            feats, ts = _host_arrays(plan, lambda _name, shape, dtype: np.empty(shape, dtype=dtype))
    except (MemoryError, torch.cuda.OutOfMemoryError):  # a budget above what is there
        raise ResidentMemoryError(f"cannot hold the features in {'GPU memory' if where == 'cuda' else 'RAM'} "
                                  f"({_size(plan.nbytes)}: out of memory); lower data.memory_budget "
                                  f"(0: read them lazily)") from None
    _fill(plan, feats, ts)
    return feats, ts


class ResidentFeatures:
    """A :class:`FeaturePlan` loaded on first use (:meth:`streams`), so that under torchrun it is
    loaded inside the process group, once per node; shared by a run's train and val splits."""

    def __init__(self, plan: FeaturePlan, where: str):
        self.plan, self.where = plan, where
        self.clip_index = {c: i for i, c in enumerate(plan.clip_ids)}
        self._streams: tuple[StreamRows, ...] | None = None
        if plan.streams:
            lengths = np.stack([sp.length for sp in plan.streams], axis=1)
            # The stream with the fewest steps sets the clock (the first of equals, as the lazy path).
            self.clock = np.argmin(lengths, axis=1)
            self.clock_length = lengths[np.arange(len(lengths)), self.clock]

    def streams(self, device: torch.device) -> tuple[StreamRows, ...]:
        if self._streams is None:
            feats, ts = _load_arrays(self.plan, self.where, device)
            self._streams = tuple(
                StreamRows(f if isinstance(f, torch.Tensor) else torch.from_numpy(f), t, sp.start, sp.length,
                           int(np.ceil(np.log2(int(sp.length.max()) + 1))) + 1)
                for f, t, sp in zip(feats, ts, self.plan.streams))
            log.info("features resident (%s): %d clips, %.2f GiB", self.where, len(self.plan.clip_ids),
                     self.plan.nbytes / GIB)
        return self._streams

    @property
    def dim(self) -> int:
        return sum(sp.dim for sp in self.plan.streams)


# ----------------------------------------------------------------------------------------------- batches

def _padded(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """int32 ``[Q, max length]`` (zeros past each row's length) and int64 lengths, without a row loop."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    out = np.zeros((len(seqs), int(lengths.max(initial=1))), dtype=np.int32)
    flat = np.fromiter((w for s in seqs for w in s), dtype=np.int32, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(seqs)), lengths)
    out[rows, np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = flat
    return out, lengths


def nearest_in_clips(ts: np.ndarray, start: np.ndarray, length: np.ndarray, at: np.ndarray,
                     rounds: int) -> np.ndarray:
    """:func:`moviefib.data.nearest_steps` of every time ``at[b, k]`` within clip ``b``'s sorted
    timestamps ``ts[start[b]:start[b] + length[b]]``: a binary search of all of them at once (the
    same left-side search and the same tie rule, so the lazy and resident paths pick the same step)."""
    s, n = start[:, None], length[:, None]
    lo, hi = np.broadcast_to(s, at.shape).copy(), np.broadcast_to(s + n, at.shape).copy()
    last = len(ts) - 1
    for _ in range(rounds):
        active = lo < hi
        mid = (lo + hi) // 2
        below = ts[np.minimum(mid, last)] < at
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    j = np.clip(lo - s, 1, np.maximum(n - 1, 1))
    left = ts[np.minimum(s + j - 1, last)]
    right = ts[np.minimum(s + j, last)]
    picked = np.where((at - left) <= (right - at), j - 1, j)
    return np.where(n > 1, picked, 0)


@dataclass(frozen=True)
class EncodedQuestions:
    """A dataset's questions as arrays: ``left``/``right`` int32 ``[Q, L]`` word indices (zeros past
    ``left_len``/``right_len``), ``answer`` and ``clip`` (index in :class:`ResidentFeatures`) int64 ``[Q]``."""

    left: np.ndarray
    left_len: np.ndarray
    right: np.ndarray
    right_len: np.ndarray
    answer: np.ndarray
    clip: np.ndarray

    @classmethod
    def of(cls, dataset: FIBDataset, clip_index: Mapping[str, int]) -> EncodedQuestions:
        pairs = [dataset.words_of(i) for i in range(len(dataset))]
        answer = np.array([dataset.item(i).answer_index for i in range(len(dataset))], dtype=np.int64)
        clip = np.array([clip_index[c] for c in dataset.clip_ids()] if clip_index else [0] * len(dataset),
                        dtype=np.int64)
        return cls(*_padded([p[0] for p in pairs]), *_padded([p[1] for p in pairs]), answer, clip)


class ResidentSplit:
    """One dataset's samples as whole batches from :class:`ResidentFeatures` (see the module doc).

    Args:
        dataset: the questions (its vocabulary, ``max_steps``, ``train`` mode and skipped clips),
            encoded on first use (count models, which read no batch, never pay for it).
        features: the run's resident features (holding every clip of ``dataset``).
    """

    def __init__(self, dataset: FIBDataset, features: ResidentFeatures):
        self.dataset, self.features = dataset, features
        self.max_steps, self.train, self.n = dataset.max_steps, dataset.train, len(dataset)

    @functools.cached_property
    def questions(self) -> EncodedQuestions:
        return EncodedQuestions.of(self.dataset, self.features.clip_index)

    def __len__(self) -> int:
        return self.n

    def batch(self, idx: np.ndarray, *, seed: int, device: torch.device, out: torch.Tensor | None = None) -> dict:
        """The batch of questions ``idx`` (what :class:`moviefib.data.Collator` makes of the lazy
        path's samples; ``seed``: the training draws'), video on the features' device, written into
        ``out`` (a flat float16 buffer large enough) when given."""
        idx, q = np.asarray(idx, dtype=np.int64), self.questions
        batch = {}
        for side, words, lengths in (("left", q.left, q.left_len), ("right", q.right, q.right_len)):
            n = lengths[idx]
            batch[side] = torch.from_numpy(words[idx, :int(n.max())].astype(np.int64))
            batch[f"{side}_len"] = torch.from_numpy(n)
        batch["answer"] = torch.from_numpy(q.answer[idx])
        batch["index"] = torch.from_numpy(idx)
        if self.features.plan.streams:
            batch["video"], batch["video_len"] = self._video(idx, seed=seed, device=device, out=out)
        return batch

    def rows(self, idx: np.ndarray, *, seed: int, device: torch.device) -> tuple[list[np.ndarray], np.ndarray]:
        """The video of questions ``idx`` as rows: per stream int64 ``[B, S]`` rows of its resident
        array (the padding row past each clip's steps), and the steps of each question ``[B]``."""
        from ..data import step_draws, step_indices

        f, clip = self.features, self.questions.clip[idx]
        streams = f.streams(device)
        n = f.clock_length[clip]
        steps = step_indices(n, self.max_steps, draws=step_draws(seed, idx) if self.train else None)
        length = np.minimum(n, self.max_steps)
        clock = f.clock[clip][:, None]
        times = np.zeros(steps.shape)
        for k, st in enumerate(streams):
            times = np.where(clock == k, st.timestamps[st.start[clip][:, None] + steps], times)
        padding = np.arange(steps.shape[1])[None, :] >= length[:, None]
        out = []
        for k, st in enumerate(streams):
            near = nearest_in_clips(st.timestamps, st.start[clip], st.length[clip], times, st.search_steps)
            rows = st.start[clip][:, None] + np.where(clock == k, steps, near)
            rows[padding] = st.pad_row
            out.append(rows)
        return out, length

    def _video(self, idx: np.ndarray, *, seed: int, device,
               out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stream's rows gathered straight into its columns of one float16 ``[B, S, D]`` tensor."""
        rows, length = self.rows(idx, seed=seed, device=device)
        streams = self.features.streams(device)
        shape = (*rows[0].shape, self.features.dim)
        if out is None:
            video = torch.empty(shape, dtype=torch.float16, device=streams[0].features.device)
        else:
            video = out[:int(np.prod(shape))].view(shape)
        flat, col = video.view(-1, self.features.dim), 0
        for st, r in zip(streams, rows):
            dim = st.features.shape[1]
            rows_t = torch.from_numpy(r.reshape(-1)).to(st.features.device, non_blocking=True)
            torch.index_select(st.features, 0, rows_t, out=flat[:, col:col + dim])
            col += dim
        return video, torch.from_numpy(length)

    def batches(self, order: Sequence[int] | np.ndarray, *, batch_size: int, seed: int, device: torch.device,
                recycle: bool = False) -> Iterator[dict]:
        """The batches of ``order`` (question indices), ``batch_size`` at a time, the last one short.

        ``recycle``: the video of batch ``j`` is written into the buffer of batch ``j - 2``, for a
        consumer done with each batch before it asks for the next one. Features in RAM only: a fresh
        78 MB batch (512 questions of 15 steps of 5120-d) costs as much in page faults as its copy;
        the GPU's caching allocator has no such cost."""
        order = np.fromiter(order, dtype=np.int64)
        buffers: list[torch.Tensor | None] = [None, None]
        reuse = recycle and bool(self.features.plan.streams) and self.features.where == "cpu"
        for j, lo in enumerate(range(0, len(order), batch_size)):
            if reuse and buffers[j % 2] is None:
                buffers[j % 2] = torch.empty(batch_size * self.max_steps * self.features.dim, dtype=torch.float16)
            yield self.batch(order[lo:lo + batch_size], seed=seed, device=device, out=buffers[j % 2])


def make_resident(datasets: Sequence[FIBDataset], stores: Mapping, *, budget_gib: float | None,
                  device: torch.device) -> str | None:
    """Give each of ``datasets`` its :class:`ResidentSplit` (one :class:`ResidentFeatures` for all)
    when the features of their clips fit the memory budget (:func:`residency`); returns where they
    are held (``"cpu"``, ``"cuda"``) or None (the lazy path)."""
    plan = FeaturePlan.of(stores, datasets)
    where = residency(plan.nbytes, budget_gib=budget_gib, device=device)
    if where is None:
        log.info("features read lazily: %.2f GiB over the memory budget", plan.nbytes / GIB)
        return None
    features = ResidentFeatures(plan, where)
    for ds in datasets:
        ds.resident = ResidentSplit(ds, features)
    return where
