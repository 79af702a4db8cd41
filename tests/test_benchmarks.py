"""Benchmarks run end to end at a tiny size: their tables and last lines come out, with ratios that are numbers."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_recording_io_benchmark_prints_its_goal_ratios(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_recording_io.py"), "--trials", "300", "--neurons", "64", "--images",
         "40", "--height", "12", "--width", "16", "--batch", "32", "--repeats", "1", "--evict", "file", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert "page cache dropped with posix_fadvise(POSIX_FADV_DONTNEED)" in out.stdout
    for row in ("in-memory, warm", "mmap: epoch with its pages dropped", "mmap, 1 worker: set-up + first epoch, cold"):
        match = re.search(rf"^\s*{re.escape(row)}\s+([\d,]+)\s+([\d.]+)$", out.stdout, re.M)
        assert match, row
        assert float(match.group(1).replace(",", "")) > 0 and float(match.group(2)) > 0
    assert re.fullmatch(r"ratio cold, loading only \(LazyRecording first epoch / in-memory epoch\): \d+\.\d{3}", lines[-2])
    assert re.fullmatch(r"ratio cold, training epoch \(NeuralDataModule mmap, pages dropped / in memory\): \d+\.\d{3}", lines[-1])
    assert not list(tmp_path.iterdir())  # its files are removed


@pytest.mark.slow
def test_gpu_benchmark_runs_the_gpu_settings_on_cpu():
    """The bf16-autocast, channels-last path a GPU run takes, at a tiny size on the CPU: every row comes out."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--batch", "8", "--size", "16",
         "--steps", "1", "--attack-steps", "1", "--precision", "bf16", "--channels-last"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bf16 autocast, channels-last" in out.stdout.splitlines()[0]
    import neuroreg.regularizers as regs

    names = ["none (plain)"] + [n for n in regs.__all__ if n.endswith("Regularizer") and n != "Regularizer"]
    assert len(names) >= 8
    for backbone in ("ResNet18", "FastResNet"):
        for name in names:
            row = re.search(rf"^{backbone}\s+{re.escape(name)}\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)$", out.stdout, re.M)
            assert row, (backbone, name)
            assert float(row.group(1).replace(",", "")) > 0 and float(row.group(3)) > 0
        for attack in ("PGD", "APGD-CE"):
            assert re.search(rf"^{backbone} {attack} \(1 steps\)\s+[\d,]+\s+[\d.]+$", out.stdout, re.M), (backbone, attack)
    assert re.search(r"^twin \(.*\): [\d,]+ trials/s", out.stdout, re.M)
