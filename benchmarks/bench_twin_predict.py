"""Cost of streaming a twin's predictions into a TargetSet.

1. Throughput: images/s of :func:`neuroreg.targets.writer.predict_target_set` (forward +
   chunked HDF5 write) vs images/s of the same twin's bare forward passes on the same
   batches. Target ratio >= 0.9.
2. Memory: peak resident memory while writing ``--n-images`` (default 100,000)
   targets of 1,000 neurons, images generated batch by batch (never all in memory).
   Target < 1 GB; the growth over the pre-write baseline shows whether memory stays flat.

    OMP_NUM_THREADS=1 python benchmarks/bench_twin_predict.py [--n-images 100000]
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class LazyImages:
    """``[N, 1, S, S]`` uint8 images made on demand from their index (1/f noise tiles)."""

    def __init__(self, n: int, size: int = 32):
        self.n, self.size = n, size
        rng = np.random.default_rng(0)
        self.bank = (rng.random((64, 1, size, size)) * 255).astype(np.uint8)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sl: slice) -> np.ndarray:
        idx = np.arange(self.n)[sl]
        return self.bank[idx % len(self.bank)]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def main() -> None:
    from neuroreg.targets.format import TargetSet
    from neuroreg.targets.writer import predict_target_set
    from neuroreg.twin.cores import Stacked2dCore
    from neuroreg.twin.module import TwinModule
    from neuroreg.twin.readouts import GaussianReadout
    from neuroreg.twin.transforms import StimulusTransform

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=100_000)
    ap.add_argument("--n-speed", type=int, default=10_000, help="images for the throughput comparison")
    ap.add_argument("--n-neurons", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    args = ap.parse_args()

    torch.manual_seed(0)
    twin = TwinModule(
        core=Stacked2dCore(1, 16, input_kernel=9, hidden_kernel=7, layers=2),
        readout=functools.partial(GaussianReadout), transform=StimulusTransform(size=(32, 32), mean=0.5, std=0.2),
        num_neurons=args.n_neurons, optimizer=functools.partial(torch.optim.Adam),
    ).eval()
    out_dir = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    bs = args.batch_size

    speed = LazyImages(args.n_speed)
    with torch.no_grad():  # warm-up
        twin(torch.from_numpy(speed[0:bs]).float() / 255.0)

    def bare() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(speed), bs):
                twin(torch.from_numpy(np.asarray(speed[start : start + bs])).float().div_(255.0)).float().cpu().numpy()
        return len(speed) / (time.perf_counter() - t0)

    def write(i: int) -> float:
        keys = np.array([f"img/{j}" for j in range(len(speed))])
        t0 = time.perf_counter()
        predict_target_set(twin, speed, keys, out_dir / f"speed{i}.h5", key=f"k{i}", batch_size=bs, dtype=args.dtype)
        return len(speed) / (time.perf_counter() - t0)

    bare_rates, write_rates = [], []
    for i in range(3):  # interleaved, best of three (the machine is shared)
        bare_rates.append(bare())
        write_rates.append(write(i))
    b, w = max(bare_rates), max(write_rates)
    print(f"throughput ({args.n_speed} images, {args.n_neurons} neurons, batch {bs}, {args.dtype}, "
          f"{torch.get_num_threads()} thread(s)):")
    print(f"  bare forward        {b:8.0f} images/s")
    print(f"  write TargetSet     {w:8.0f} images/s")
    print(f"  ratio               {w / b:8.2f}  (target >= 0.9)")

    big = LazyImages(args.n_images)
    keys = np.array([f"img/{j:07d}" for j in range(args.n_images)])
    before = rss_mb()
    t0 = time.perf_counter()
    path = predict_target_set(twin, big, keys, out_dir / "big.h5", key="big", batch_size=bs, dtype=args.dtype)
    elapsed = time.perf_counter() - t0
    peak = rss_mb()
    size_mb = path.stat().st_size / 2**20
    header = TargetSet.read_header(path)
    print(f"memory writing {args.n_images} x {args.n_neurons} {args.dtype} targets ({size_mb:.0f} MB file, {elapsed:.0f} s):")
    print(f"  peak RSS before writing {before:7.0f} MB")
    print(f"  peak RSS after writing  {peak:7.0f} MB  (target < 1024 MB; growth {peak - before:.0f} MB,"
          f" dense array would be {args.n_images * args.n_neurons * np.dtype(args.dtype).itemsize / 2**20:.0f} MB)")
    assert int(header["n_images"]) == args.n_images


if __name__ == "__main__":
    main()
