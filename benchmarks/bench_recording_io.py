"""Convert a generated Sensorium-scale file tree, then read random mini-batches cold and warm.

Scale by default: 5,000 trials x 8,000 neurons, 4,000 distinct 36x64 images (a
~160 MB file). "Cold" means the file's pages were dropped from the page cache just
before: by writing ``/proc/sys/vm/drop_caches`` where allowed, else by
``posix_fadvise(POSIX_FADV_DONTNEED)`` on the file (the benchmark says which). Every
ratio is against the warm in-memory epoch of the same run (the machine may be
shared: absolute rates move with load, ratios measured in one run are what counts).

Rows: in-memory (a loaded NeuralRecording, fancy-indexed); cold load + first
epoch (what NeuralDataModule does: NeuralRecording.load, then in-memory batches);
LazyRecording cold first epoch (open + epoch) and warm; a LazyRecording whose budget
holds a quarter of the file (memory-mapped sorted row reads), cold and warm; and the
same cold first epochs with a small training step per batch (a conv core and a
linear readout to every neuron, forward + backward), where the background read
overlaps with compute. Then the training epochs a twin fit really runs, through
NeuralDataModule's training loader with that step: in memory (warm), and with
``mmap=True`` (responses memory-mapped, each batch reads its sorted rows), both as a
cold first epoch including the module's set-up, and as an epoch whose pages were
dropped after set-up (every epoch of a recording larger than memory), without and
with a loader worker reading ahead. The set-up of a memory-mapped recording (load,
checks, training mean, the Poisson loss's check) is timed cold against one cold
sequential read of the file: it makes one pass over the responses.

The last two lines are the goal ratios: the cold LazyRecording epoch ÷ in-memory
epoch, loading only (bounded by disk ÷ memory bandwidth: the floor line says how),
and a training epoch through NeuralDataModule(mmap=True) (the default, no workers) with
its pages dropped ÷ the in-memory one.

    OMP_NUM_THREADS=1 python benchmarks/bench_recording_io.py [--trials 5000] [--neurons 8000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuroreg.data.datamodules import NeuralDataModule
from neuroreg.data.lazy import open_recording
from neuroreg.data.readers.sensorium import read_sensorium
from neuroreg.data.recording import NeuralRecording
from neuroreg.twin.losses import PoissonLoss


DROP_ALL = True  # --evict file: only posix_fadvise on the file


def drop_cache(path: Path) -> str:
    """Evict ``path`` from the page cache; returns the method used."""
    try:
        if not DROP_ALL:
            raise PermissionError("--evict file")
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return "drop_caches"
    except OSError:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return "posix_fadvise(POSIX_FADV_DONTNEED)"


def make_tree(root: Path, n_trials: int, n_neurons: int, n_images: int, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = root / "static00000-1-1-Bench"
    for sub in ("data/images", "data/responses", "data/behavior", "data/pupil_center", "meta/trials", "meta/neurons"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    frame_id = rng.integers(0, n_images, n_trials)
    pix = rng.integers(0, 256, (n_images, 1, h, w), dtype=np.uint8)
    for i in range(n_trials):
        np.save(base / f"data/images/{i}.npy", pix[frame_id[i]])
        np.save(base / f"data/responses/{i}.npy", rng.gamma(1.0, 1.0, n_neurons).astype(np.float32))
        np.save(base / f"data/behavior/{i}.npy", rng.normal(size=3).astype(np.float32))
        np.save(base / f"data/pupil_center/{i}.npy", rng.normal(size=2).astype(np.float32))
    tiers = np.where(rng.random(n_trials) < 0.8, "train", "validation")
    np.save(base / "meta/trials/tiers.npy", tiers)
    np.save(base / "meta/trials/frame_image_id.npy", frame_id)
    np.save(base / "meta/neurons/unit_ids.npy", np.arange(n_neurons))
    return base


def epochs(get_batch, n_trials: int, batch: int, n_epochs: int, seed: int = 0, step=None, start=None) -> list[float]:
    """Samples/s of each epoch of random mini-batches, converted to float tensors.

    ``step(x, y)`` runs a training step on every batch; ``start()`` runs inside the
    first epoch's timing (opening or loading the file).
    """
    rng = np.random.default_rng(seed)
    rates = []
    for e in range(n_epochs):
        perm = rng.permutation(n_trials)
        t0 = time.perf_counter()
        if start is not None and e == 0:
            get_batch = start()
        for s in range(0, n_trials, batch):
            ims, resp = get_batch(perm[s : s + batch])
            x = torch.from_numpy(ims).float().div_(255.0)
            y = torch.from_numpy(resp)
            assert x.shape[0] == y.shape[0]
            if step is not None:
                step(x, y)
        rates.append(n_trials / (time.perf_counter() - t0))
    return rates


def train_step(n_neurons: int, channels: int, h: int, w: int):
    """A small twin-like training step: conv core, linear readout to every neuron, Poisson loss, SGD."""
    torch.manual_seed(0)
    core = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 16, 5, stride=2, padding=2), torch.nn.ELU(),
        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ELU(), torch.nn.AdaptiveAvgPool2d((3, 4)), torch.nn.Flatten(),
    )
    model = torch.nn.Sequential(core, torch.nn.Linear(16 * 12, n_neurons))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(x, y):
        opt.zero_grad()
        loss = torch.nn.functional.poisson_nll_loss(model(x), y, log_input=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=5000)
    p.add_argument("--neurons", type=int, default=8000)
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--height", type=int, default=36)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every cold run (medians are printed)")
    p.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder)")
    p.add_argument("--evict", choices=("all", "file"), default="all",
                   help="how cold runs empty the page cache: all of it (/proc/sys/vm/drop_caches, where allowed) or "
                        "only this file's pages (posix_fadvise)")
    a = p.parse_args()
    global DROP_ALL
    DROP_ALL = a.evict == "all"
    torch.set_num_threads(1)
    if a.dir is not None:
        Path(a.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        tree = make_tree(tmp, a.trials, a.neurons, a.images, a.height, a.width)
        t1 = time.perf_counter()
        rec = read_sensorium(tree)
        out = rec.save(tmp / "bench.h5")
        t2 = time.perf_counter()
        size = out.stat().st_size
        del rec
        print(f"generated tree: {a.trials} trials x {a.neurons} neurons, {a.height}x{a.width} images ({t1 - t0:.1f} s)")
        print(f"convert (read_sensorium + save): {t2 - t1:.2f} s -> {size / 2**20:.1f} MiB")

        mem = NeuralRecording.load(out)
        n, bs = mem.n_trials, a.batch

        def mem_batch(idx):
            return mem.images[mem.trial_image[idx]], mem.responses[idx]

        mem_warm = float(np.median(epochs(mem_batch, n, bs, 3)[1:]))
        method = drop_cache(out)
        t = time.perf_counter()
        with open(out, "rb") as fh:
            while fh.read(16 << 20):
                pass
        seq = time.perf_counter() - t
        print(f"page cache dropped with {method} before every cold run")
        print(f"sequential read of the whole file, cold: {seq:.3f} s ({size / seq / 2**20:,.0f} MiB/s); "
              f"in-memory epoch: {n / mem_warm:.3f} s")

        def load_start():
            loaded = NeuralRecording.load(out)
            return lambda idx: (loaded.images[loaded.trial_image[idx]], loaded.responses[idx])

        def lazy_start(cache):
            def start():
                opened.append(open_recording(out, cache_bytes=cache))
                return opened[-1].batch
            return start

        def cold(n_epochs=1, **kw):
            drop_cache(out)
            rates = epochs(None, n, bs, n_epochs, **kw)
            for r in opened:
                r.close()
            opened.clear()
            return rates

        opened: list = []
        step = train_step(mem.n_neurons, mem.images.shape[1], a.height, a.width)
        runs: dict[str, list[float]] = {}
        for _ in range(a.repeats):  # interleaved, so a change of machine load hits every row alike
            runs.setdefault("mem", []).append(float(np.median(epochs(mem_batch, n, bs, 3)[1:])))
            runs.setdefault("load", []).append(cold(start=load_start)[0])
            lazy = cold(3, start=lazy_start(2 * size))
            runs.setdefault("lazy", []).append(lazy[0])
            runs.setdefault("lazy_warm", []).append(float(np.median(lazy[1:])))
            small = cold(2, start=lazy_start(size // 4))
            runs.setdefault("small", []).append(small[0])
            runs.setdefault("small_warm", []).append(small[1])
        for _ in range(a.repeats):
            runs.setdefault("mem_step", []).append(epochs(mem_batch, n, bs, 1, step=step)[0])
            runs.setdefault("load_step", []).append(cold(step=step, start=load_start)[0])
            runs.setdefault("lazy_step", []).append(cold(step=step, start=lazy_start(2 * size))[0])

        def train_epoch(loader, t0: float) -> float:
            """Samples/s of one pass of the training step over ``loader``, timed from ``t0``."""
            seen = 0
            for batch in loader:
                step(batch["image"], batch["response"])
                seen += len(batch["response"])
            return seen / (time.perf_counter() - t0)

        def module_epoch(mmap: bool, workers: int, cold_setup: bool, evict: bool) -> float:
            """One training epoch through NeuralDataModule's loader; timed from the module's set-up unless ``evict``."""
            if cold_setup:
                drop_cache(out)
            t0 = time.perf_counter()
            dm = NeuralDataModule(str(out), batch_size=bs, seed=0, mmap=mmap, num_workers=workers)
            dm.mean_response("default")  # what TwinModule.setup reads
            loader = dm.train_dataloader()
            if evict:
                drop_cache(out)
                t0 = time.perf_counter()
            return train_epoch(loader, t0)

        def module_warm() -> float:
            loader = NeuralDataModule(str(out), batch_size=bs, seed=0).train_dataloader()
            list(loader)  # set-up and one pass outside the timing
            return train_epoch(loader, time.perf_counter())

        def mmap_setup() -> float:
            """Seconds of a twin fit's set-up of a memory-mapped recording, cold: load, checks, training mean and
            the Poisson loss's check (one pass over the responses)."""
            drop_cache(out)
            t0 = time.perf_counter()
            dm = NeuralDataModule(str(out), batch_size=bs, seed=0, mmap=True)
            dm.mean_response("default")
            PoissonLoss().check(dm.recordings["default"].response_summary(), "bench")
            return time.perf_counter() - t0

        for _ in range(a.repeats):
            runs.setdefault("setup", []).append(mmap_setup())
            runs.setdefault("dm_mem", []).append(module_warm())
            runs.setdefault("dm_load_cold", []).append(module_epoch(False, 0, True, False))
            runs.setdefault("dm_mmap_cold", []).append(module_epoch(True, 0, True, False))
            runs.setdefault("dm_mmap_cold_w1", []).append(module_epoch(True, 1, True, False))
            runs.setdefault("dm_mmap_evict", []).append(module_epoch(True, 0, False, True))
            runs.setdefault("dm_mmap_evict_w1", []).append(module_epoch(True, 1, False, True))
        med = {k: float(np.median(v)) for k, v in runs.items()}
        mem_warm, mem_step = med["mem"], med["mem_step"]
        rows = [
            ("in-memory, warm", "mem", mem_warm),
            ("load + first epoch, cold (NeuralDataModule)", "load", mem_warm),
            ("LazyRecording first epoch, cold", "lazy", mem_warm),
            ("LazyRecording, warm", "lazy_warm", mem_warm),
            ("LazyRecording, 1/4 budget, cold", "small", mem_warm),
            ("LazyRecording, 1/4 budget, warm", "small_warm", mem_warm),
            ("with a training step: in-memory", "mem_step", mem_step),
            ("with a training step: load + first epoch, cold", "load_step", mem_step),
            ("with a training step: LazyRecording first epoch, cold", "lazy_step", mem_step),
            ("NeuralDataModule training epoch, in memory, warm", "dm_mem", med["dm_mem"]),
            ("  in memory: set-up + first epoch, cold", "dm_load_cold", med["dm_mem"]),
            ("  mmap: set-up + first epoch, cold", "dm_mmap_cold", med["dm_mem"]),
            ("  mmap, 1 worker: set-up + first epoch, cold", "dm_mmap_cold_w1", med["dm_mem"]),
            ("  mmap: epoch with its pages dropped", "dm_mmap_evict", med["dm_mem"]),
            ("  mmap, 1 worker: epoch with its pages dropped", "dm_mmap_evict_w1", med["dm_mem"]),
        ]
        print(f"medians of {a.repeats} interleaved repeats")
        print(f"{'reading':<56} {'samples/s':>10} {'ratio':>6}")
        for name, key, ref in rows:
            print(f"{name:<56} {med[key]:>10,.0f} {med[key] / ref:>6.2f}")
        print(f"mmap set-up (load, checks, training mean, Poisson check), cold: {med['setup']:.3f} s = "
              f"{med['setup'] / seq:.2f}x a cold sequential read of the file")
        floor = seq + n / mem_warm
        print(f"loading-only cold epoch floor (cold sequential read, then an in-memory epoch): ratio {n / mem_warm / floor:.2f}")
        print(f"ratio cold, loading only (LazyRecording first epoch / in-memory epoch): {med['lazy'] / mem_warm:.3f}")
        print(f"ratio cold, training epoch (NeuralDataModule mmap, pages dropped / in memory): "
              f"{med['dm_mmap_evict'] / med['dm_mem']:.3f}")


if __name__ == "__main__":
    main()
