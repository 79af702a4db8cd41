"""Benchmarks run end to end at a tiny size: their tables and last lines come out, with ratios that are numbers."""

import os
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
    assert re.search(r"^mmap set-up \(load, checks, training mean, Poisson check\), cold: \d+\.\d{3} s = \d+\.\d\dx a cold "
                     r"sequential read of the file$", out.stdout, re.M)
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


@pytest.mark.slow
def test_fast_backbone_benchmark_trains_both_backbones_on_the_same_batches():
    args = [sys.executable, str(ROOT / "benchmarks" / "bench_fast_backbone.py"), "--device", "cpu", "--size", "16",
            "--epochs", "1", "--batch", "32"]
    out = subprocess.run([*args, "--train-images", "64"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("ClutteredDigits 16x16: 64 train / ") and "1 epochs, batch 32, CPU" in lines[0]
    acc = {}
    for name in ("FastResNet", "ResNet18"):
        row = re.search(rf"^{name}\s+test accuracy (\d\.\d{{3}})\s+([\d.]+) s/epoch$", out.stdout, re.M)
        assert row, name
        acc[name] = float(row.group(1))
    diff = re.fullmatch(r"accuracy difference \(FastResNet - ResNet18\): ([+-]\d+\.\d) points; time per epoch ratio (\d+\.\d\d)",
                        lines[-1])
    assert diff and float(diff.group(1)) == pytest.approx(100 * (acc["FastResNet"] - acc["ResNet18"]), abs=0.06)
    refused = subprocess.run([*args, "--train-images", "8"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert refused.returncode == 2 and "--train-images: expected at least one batch (32), found 8" in refused.stderr


def test_gpu_suite_refuses_without_a_cuda_device(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 2 and "expected a CUDA device visible to torch" in out.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_suite_runs_every_step_and_reports_the_failed_one(tmp_path):
    """With a stand-in interpreter that reports a GPU: every step runs and is logged, a failing step makes the exit 1."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\n[ "$1" = -c ] && exit 0\necho "ran $*"\ncase "$*" in *bench_gpu*) exit 3;; esac\n')
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA test device'\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake / "python"), "PATH": f"{fake}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 1, out.stderr
    assert "step bench_gpu failed" in out.stderr and "bench_fast_backbone failed" not in out.stderr
    logs = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert sorted(logs) == ["bench_fast_backbone.txt", "bench_gpu.txt", "cuda_tests.txt", "nvidia-smi.txt"]
    assert logs["nvidia-smi.txt"] == "NVIDIA test device\n"
    assert logs["bench_fast_backbone.txt"] == "ran benchmarks/bench_fast_backbone.py --size 32 --epochs 8 --batch 32 --lr 0.05\n"
    assert logs["cuda_tests.txt"].startswith("ran -m pytest -q") and "test_random_state.py" in logs["cuda_tests.txt"]
