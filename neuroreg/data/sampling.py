"""Training-data order that survives a restart: seeded by (seed, epoch), resumable mid-epoch.

A fit that is killed and resumed from a checkpoint sees the same batches as one that
ran through, because nothing here draws from the global random state:

- :class:`EpochSampler` permutes indices with a generator seeded by ``(seed, epoch,
  stream)``; Lightning calls its ``set_epoch`` before every training epoch.
- :class:`ResumableBatchSampler` (a :class:`~torch.utils.data.BatchSampler`, so
  Lightning can still inject a ``DistributedSampler`` under DDP) and
  :class:`GroupedBatchSampler` can start an epoch at a given batch.
- :class:`ResumableLoader` is a DataLoader with ``state_dict`` / ``load_state_dict``:
  Lightning stores the state of stateful training loaders in every checkpoint and,
  when it restarts from a checkpoint written inside an epoch, loads it back, so the
  rest of that epoch is exactly the batches that had not been trained on yet.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler


def run_seed() -> int:
    """The run's seed: the value ``seed_everything`` stored in ``PL_GLOBAL_SEED``, else 0.

    Raises:
        ValueError: ``PL_GLOBAL_SEED`` is set but not an integer.
    """
    value = os.environ.get("PL_GLOBAL_SEED")
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable PL_GLOBAL_SEED: expected an integer seed, found {value!r}") from None


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A torch generator seeded by ``(seed, epoch, stream)`` only.

    Args:
        seed: the run's seed.
        epoch: the training epoch.
        stream: distinguishes independent orders drawn in the same epoch.

    Returns:
        A new CPU generator; equal arguments give equal random streams.
    """
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch), int(stream)]
    value = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(value) & 0x7FFF_FFFF_FFFF_FFFF)


class EpochSampler(Sampler[int]):
    """Indices of a dataset made of consecutive parts, in an order fixed by ``(seed, epoch)``.

    Each pass over the data yields the parts in order, every part's indices permuted
    (``shuffle``) or in order. With ``num_samples`` larger than the data, passes are
    concatenated (each one permuted anew) and cut at ``num_samples``. The order is
    computed when iteration starts, from the epoch last given to :meth:`set_epoch`.

    Args:
        sizes: items per part (one int: a single part).
        shuffle: permute within parts.
        seed: seed of the permutations.
        num_samples: indices per epoch (default: all items once).
        stream: independent stream for the same seed (e.g. one per data source).

    Raises:
        ValueError: a negative size, or ``num_samples`` < 1 or without items to draw.
    """

    def __init__(self, sizes: int | Sequence[int], shuffle: bool = True, seed: int = 0, num_samples: int | None = None, stream: int = 0):
        self.sizes = [int(sizes)] if isinstance(sizes, (int, np.integer)) else [int(n) for n in sizes]
        if any(n < 0 for n in self.sizes):
            raise ValueError(f"EpochSampler: 'sizes': expected non-negative sizes, found {self.sizes}")
        if num_samples is not None and (num_samples < 1 or sum(self.sizes) == 0):
            raise ValueError(f"EpochSampler: 'num_samples': expected >= 1 and some items to draw, found {num_samples} of {self.sizes}")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_samples = sum(self.sizes) if num_samples is None else int(num_samples)
        self.stream = int(stream)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = epoch_generator(self.seed, self.epoch, self.stream)
        left = self.num_samples
        while left > 0:
            offset = 0
            for n in self.sizes:
                order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
                for i in order[:left].tolist():
                    yield i + offset
                left -= min(n, left)
                offset += n
                if left == 0:
                    return

    def __len__(self) -> int:
        return self.num_samples


class ResumableBatches:
    """Mixin of batch samplers that can start their next epoch at a given batch.

    A subclass's ``__iter__`` is a generator that yields its batches through
    :meth:`_from_start`, so the start is used by the first iterator that is actually
    advanced (a multi-worker DataLoader creates one it never advances).
    """

    _start = 0

    def start_at(self, epoch: int, batch: int) -> None:
        """Make the next iteration the rest of ``epoch``, from batch ``batch`` (0-based) on."""
        set_epoch = getattr(getattr(self, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        self._start = int(batch)

    def _from_start(self, batches: Iterator[list[int]]) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        return itertools.islice(batches, start, None)


class ResumableBatchSampler(ResumableBatches, BatchSampler):
    """:class:`~torch.utils.data.BatchSampler` that can start an epoch at a given batch.

    Args:
        sampler: index sampler (e.g. an :class:`EpochSampler`).
        batch_size: items per batch.
        drop_last: drop a last, smaller batch.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._from_start(super().__iter__())


class ResumableLoader(DataLoader):
    """A DataLoader whose position within an epoch is part of a checkpoint.

    ``state_dict()`` is ``{"epoch", "batch"}``: the epoch being iterated and how many
    of its batches were handed out; ``load_state_dict`` makes the next iteration
    continue from there. Iteration is lazy: the batch sampler (hence the epoch's
    order) and the worker processes start at the first ``next()``, after Lightning's
    ``set_epoch``. Starting an iteration draws nothing from the global random state
    (the workers' base seed comes from the loader's own generator, seeded by the
    sampler's seed, the epoch and the first batch), so restarting mid-epoch leaves
    the global random stream as it was in the uninterrupted run.

    Args:
        dataset: the dataset.
        batch_sampler: a :class:`ResumableBatches` batch sampler.
        **kwargs: other :class:`~torch.utils.data.DataLoader` arguments.

    Raises:
        TypeError: the batch sampler cannot start an epoch at a given batch.
    """

    def __init__(self, dataset, batch_sampler: ResumableBatches, **kwargs):
        if not isinstance(batch_sampler, ResumableBatches):
            raise TypeError(f"ResumableLoader: 'batch_sampler': expected a ResumableBatches sampler, found {type(batch_sampler).__name__}")
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._batch = 0

    def _epoch(self) -> int:
        return int(getattr(getattr(self.batch_sampler, "sampler", None), "epoch", 0))

    def __iter__(self) -> Iterator:
        self._batch = self.batch_sampler._start
        seed = int(getattr(getattr(self.batch_sampler, "sampler", None), "seed", 0))
        self.generator.manual_seed(epoch_generator(seed, self._epoch(), stream=self._batch).initial_seed())
        for batch in super().__iter__():
            self._batch += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": epoch being iterated, "batch": batches handed out in it}``."""
        return {"epoch": self._epoch(), "batch": self._batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at batch ``state["batch"]`` of epoch ``state["epoch"]`` on the next iteration.

        Raises:
            ValueError: the state lacks ``epoch`` or ``batch``, or the batch is past the epoch's end.
        """
        missing = [k for k in ("epoch", "batch") if k not in state]
        if missing:
            raise ValueError(f"ResumableLoader: checkpointed loader state: expected keys 'epoch' and 'batch', found {sorted(state)}")
        batch = int(state["batch"])
        if not 0 <= batch <= len(self.batch_sampler):
            raise ValueError(f"ResumableLoader: checkpointed loader state: expected a batch in [0, {len(self.batch_sampler)}], found {batch}")
        self.batch_sampler.start_at(int(state["epoch"]), batch)


class GroupedBatchSampler(ResumableBatches, Sampler[list[int]]):
    """Batches of indices into a ConcatDataset, each batch from a single part.

    With ``shuffle`` the items of each part and the order of all batches are
    permuted every epoch by a generator seeded with ``(seed, epoch)`` only (the
    epoch is that of ``self.sampler``, which Lightning sets before each training
    epoch), so a resumed fit sees the same batches; a last batch smaller than
    ``batch_size`` is dropped when ``drop_last`` and the part is larger than one
    batch (batch norm needs more than one item). An epoch can start at a given batch
    (:meth:`ResumableBatches.start_at`).

    Args:
        sizes: items per part.
        batch_size: items per batch.
        shuffle: permute items within parts and the order of batches.
        drop_last: drop a part's last, smaller batch (see above).
        seed: seed of the permutations.
        num_replicas, rank: distributed data parallel: every rank computes the same
            epoch order and takes every ``num_replicas``-th batch from batch ``rank`` on,
            so the ranks see disjoint shares. With ``drop_last`` every rank gets the same
            number of batches (a remainder of fewer than ``num_replicas`` batches is
            dropped; training steps stay in lockstep); without it, the shares cover every
            batch exactly once (evaluation).

    Raises:
        ValueError: ``rank`` not in ``[0, num_replicas)``.
    """

    def __init__(self, sizes: list[int], batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"GroupedBatchSampler: 'rank': expected 0 <= rank < num_replicas ({num_replicas}), found {rank}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.sampler = EpochSampler(self.sizes, shuffle=shuffle, seed=self.seed)

    def _batches(self) -> list[list[int]]:
        indices = iter(self.sampler)
        batches = []
        for n in self.sizes:
            idx = list(itertools.islice(indices, n))
            for start in range(0, n, self.batch_size):
                chunk = idx[start : start + self.batch_size]
                if self.drop_last and len(chunk) < self.batch_size and n > self.batch_size:
                    continue
                batches.append(chunk)
        if self.shuffle:
            order = torch.randperm(len(batches), generator=epoch_generator(self.seed, self.sampler.epoch, stream=1))
            batches = [batches[i] for i in order.tolist()]
        if self.num_replicas > 1:
            batches = batches[self.rank :: self.num_replicas][: len(self)]
        return batches

    def __iter__(self):
        yield from self._from_start(iter(self._batches()))

    def __len__(self) -> int:
        total = 0
        for n in self.sizes:
            full, rest = divmod(n, self.batch_size)
            total += full + (1 if rest and not (self.drop_last and n > self.batch_size) else 0)
        if self.num_replicas > 1:
            share, extra = divmod(total, self.num_replicas)
            return share if self.drop_last else share + (self.rank < extra)
        return total
