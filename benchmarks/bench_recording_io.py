"""Convert a generated 5,000-trial Sensorium-style file tree, then read random mini-batches.

Prints: conversion time, samples/s for random mini-batches (images as float tensors
+ responses) from an in-memory NeuralRecording and from the HDF5 file through
:class:`neuroreg.data.lazy.LazyRecording`, and their ratio (target >= 0.8), for the
first (cold) epoch and for the following (warm) epochs, plus a run whose cache holds
only a quarter of the file.

    OMP_NUM_THREADS=1 python benchmarks/bench_recording_io.py [--trials 5000] [--neurons 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuroreg.data.lazy import open_recording
from neuroreg.data.readers.sensorium import read_sensorium
from neuroreg.data.recording import NeuralRecording


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


def epochs(get_batch, n_trials: int, batch: int, n_epochs: int, seed: int = 0) -> list[float]:
    """Samples/s of each epoch of random mini-batches, converted to float tensors."""
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(n_epochs):
        perm = rng.permutation(n_trials)
        t0 = time.perf_counter()
        for s in range(0, n_trials, batch):
            ims, resp = get_batch(perm[s : s + batch])
            x = torch.from_numpy(ims).float().div_(255.0)
            y = torch.from_numpy(resp)
            assert x.shape[0] == y.shape[0]
        rates.append(n_trials / (time.perf_counter() - t0))
    return rates


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=5000)
    p.add_argument("--neurons", type=int, default=2000)
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--height", type=int, default=36)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        tree = make_tree(tmp, a.trials, a.neurons, a.images, a.height, a.width)
        t1 = time.perf_counter()
        rec = read_sensorium(tree)
        out = rec.save(tmp / "bench.h5")
        t2 = time.perf_counter()
        size = out.stat().st_size
        print(f"generated tree: {a.trials} trials x {a.neurons} neurons, {a.height}x{a.width} images ({t1 - t0:.1f} s)")
        print(f"convert (read_sensorium + save): {t2 - t1:.2f} s -> {size / 2**20:.1f} MiB, {rec.n_images} distinct images")

        mem = NeuralRecording.load(out)
        mem_rates = epochs(lambda idx: (mem.images[mem.trial_image[idx]], mem.responses[idx]), mem.n_trials, a.batch, a.epochs)

        with open_recording(out, cache_bytes=2 * size) as lazy:
            lazy_rates = epochs(lazy.batch, lazy.n_trials, a.batch, a.epochs)
        with open_recording(out, cache_bytes=size // 4) as small:
            small_rates = epochs(small.batch, small.n_trials, a.batch, 2)

        mem_warm = float(np.median(mem_rates[1:]))
        lazy_warm = float(np.median(lazy_rates[1:]))
        print(f"in-memory        : {mem_warm:,.0f} samples/s (median of epochs 2..{a.epochs})")
        print(f"HDF5 lazy, cold  : {lazy_rates[0]:,.0f} samples/s (epoch 1, ratio {lazy_rates[0] / mem_warm:.2f})")
        print(f"HDF5 lazy, warm  : {lazy_warm:,.0f} samples/s (ratio {lazy_warm / mem_warm:.2f}; target >= 0.8)")
        print(f"HDF5 lazy, cache 1/4 of file: {small_rates[-1]:,.0f} samples/s (ratio {small_rates[-1] / mem_warm:.2f})")
        print(f"ratio {lazy_warm / mem_warm:.3f}")


if __name__ == "__main__":
    main()
