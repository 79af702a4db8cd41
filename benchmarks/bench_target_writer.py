"""TargetSet writing: throughput against bare forward passes, and the writer's own peak memory.

A small twin (Stacked2dCore, Gaussian readout) predicts ``--neurons`` responses for
``--images`` random 16×16 grey images. Printed: images/s of bare forward passes
(inference mode, predictions discarded), images/s of
:func:`neuroreg.targets.writer.predict_target_set` writing the same predictions to a
TargetSet file, their ratio (goal >= 0.9; the bare rate is the mean of a run before and
one after the writing run, so a change of machine load shows as a spread), the process's resident memory after the
imports, and the peak resident memory while writing above that (the writer's own
share; the peak is reset through ``/proc/self/clear_refs`` where Linux allows).

    python benchmarks/bench_target_writer.py [--images 100000] [--neurons 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _status(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status: no field {field}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (more than one oversubscribes a shared machine)")
    a = p.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)

    from neuroreg.targets.writer import predict_target_set
    from neuroreg.twin.cores import Stacked2dCore
    from neuroreg.twin.module import TwinModule
    from neuroreg.twin.transforms import StimulusTransform

    torch.manual_seed(0)
    twin = TwinModule(core=Stacked2dCore(1, 8, input_kernel=5, hidden_kernel=3, layers=2), num_neurons=a.neurons,
                      transform=StimulusTransform(size=(16, 16))).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.images, 1, 16, 16), dtype=np.uint8)
    keys = np.asarray([f"img/{i}" for i in range(a.images)], dtype=object)
    after_imports = _status("VmRSS")

    def bare_rate() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, a.images, a.batch):
                twin(torch.from_numpy(images[s : s + a.batch]).float().div_(255.0)).float().cpu().numpy()
        return a.images / (time.perf_counter() - t)

    bare_before = bare_rate()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
            reset = True
        except OSError:
            reset = False
        before = _status("VmRSS")
        t = time.perf_counter()
        out = predict_target_set(twin, images, keys, Path(tmp) / "t.h5", key="bench", batch_size=a.batch)
        written = a.images / (time.perf_counter() - t)
        peak = _status("VmHWM")
        size = out.stat().st_size
    bare = (bare_before + bare_rate()) / 2  # forward passes before and after the writing run
    mib = 2**20
    print(f"{a.images:,} images x {a.neurons:,} neurons (float32 file of {size / mib:,.0f} MiB), batch {a.batch}, CPU")
    print(f"bare forward passes : {bare:>10,.0f} images/s (before {bare_before:,.0f}, after {2 * bare - bare_before:,.0f})")
    print(f"predict_target_set  : {written:>10,.0f} images/s")
    print(f"resident memory after imports, twin and images: {after_imports / mib:,.0f} MiB "
          f"(images alone {images.nbytes / mib:,.0f} MiB)")
    print(f"writer's own peak above that: {(peak - before) / mib:,.1f} MiB"
          f"{'' if reset else ' (peak not resettable here: an upper bound)'}")
    print(f"ratio {written / bare:.3f}")


if __name__ == "__main__":
    main()
