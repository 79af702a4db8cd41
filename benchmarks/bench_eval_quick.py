"""Wall time of ``neuroreg eval --suite quick`` on a briefly trained quickstart model.

Trains the quickstart config for ``--epochs`` epochs (no end-of-fit evaluation) into a
temporary directory, unless ``--ckpt`` names an existing quickstart checkpoint, then
times the quick suite end to end (model rebuild, data, every measurement, writing).
Target: under 2 minutes on 2 CPU cores.

    OMP_NUM_THREADS=2 python benchmarks/bench_eval_quick.py [--epochs 1] [--ckpt RUN/checkpoints/x.ckpt]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import torch

    from neuroreg.cli import main as neuroreg

    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--ckpt", type=Path)
    args = p.parse_args()
    ckpt = args.ckpt
    if ckpt is None:
        tmp = Path(tempfile.mkdtemp(prefix="neuroreg-bench-"))
        neuroreg([
            "fit", "--config", str(ROOT / "experiments" / "quickstart.yaml"), f"--trainer.max_epochs={args.epochs}",
            "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp}",
            f"--trainer.logger.init_args.save_dir={tmp / 'runs'}", "--trainer.enable_progress_bar=false",
        ])
        ckpt = next(tmp.rglob("*.ckpt"))
    t, cpu = time.perf_counter(), time.process_time()
    status = neuroreg(["eval", "--ckpt", str(ckpt), "--suite", "quick", "--no-progress", "--device", "cpu"])
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"threads={torch.get_num_threads()} checkpoint={ckpt}")
    print(f"quick suite wall time: {wall:.1f} s (target < 120 s), CPU time {cpu:.1f} s, exit status {status}")
    if os.getloadavg()[0] > os.cpu_count():
        print(f"note: load average {os.getloadavg()[0]:.1f} > {os.cpu_count()} cores: other processes share the CPU")


if __name__ == "__main__":
    main()
