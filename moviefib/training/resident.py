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

from ..distributed import distributed_env

if TYPE_CHECKING:
    from ..data import FIBDataset

log = logging.getLogger(__name__)

GIB = 2**30
# Without data.memory_budget: the features are held when they take at most this share of the memory
# they go to (the rest is the model's, the optimiser's, the batches' and the page cache's).
AUTO_BUDGET_SHARE = 0.5
# Rows read from a store at once while loading: about 64 MB of 1024-d float16 steps.
_BLOCK_ROWS = 32768


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


def share_host_arrays(plan: FeaturePlan, *, local_rank: int, token: str, barrier: Callable[[], None],
                      folder: str | os.PathLike | None = None) -> tuple[list, list]:
    """The planned arrays, one copy per node: the node's local rank 0 fills files in shared memory
    (``/dev/shm``) that every local process maps; the files are unlinked once all have mapped them
    (the mappings stay). ``token`` names this launch's files (the same on every process);
    ``barrier`` waits for every process."""
    root = Path(folder or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()))
    paths: list[Path] = []

    def mapped(mode: str):
        def make(name, shape, dtype):
            paths.append(root / f"moviefib-{token}-{name}")
            return np.memmap(paths[-1], dtype=dtype, mode=mode, shape=shape)
        return make

    if local_rank == 0:
        try:
            arrays = _host_arrays(plan, mapped("w+"))
            _fill(plan, *arrays)
        except BaseException:
            for p in paths:
                p.unlink(missing_ok=True)
            raise
    barrier()
    if local_rank != 0:
        arrays = _host_arrays(plan, mapped("r+"))
    barrier()
    if local_rank == 0:
        for p in paths:
            p.unlink(missing_ok=True)
    return arrays


def _launch_token() -> str:
    """A name for this launch's shared files, drawn by rank 0 and sent to every process."""
    import torch.distributed as dist

    box = [uuid.uuid4().hex if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _load_arrays(plan: FeaturePlan, where: str, device: torch.device) -> tuple[list, list]:
    """The filled arrays of ``plan``: on the GPU, shared between a node's processes, or private."""
    import torch.distributed as dist

    env = distributed_env()
    if where == "cuda":
        feats = [torch.empty((sp.rows + 1, sp.dim), dtype=torch.float16, device=device) for sp in plan.streams]
        ts = [np.empty(sp.rows, dtype=np.float64) for sp in plan.streams]
        _fill(plan, feats, ts)
        return feats, ts
    if env.distributed and dist.is_available() and dist.is_initialized():
        return share_host_arrays(plan, local_rank=env.local_rank, token=_launch_token(), barrier=dist.barrier)
    arrays = _host_arrays(plan, lambda _name, shape, dtype: np.empty(shape, dtype=dtype))
    _fill(plan, *arrays)
    return arrays


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
