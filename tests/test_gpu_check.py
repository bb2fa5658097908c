"""bench/gpu_check.sh on a machine without CUDA: skips cleanly; its CPU-checkable parts run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run(tmp_path, *args):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_without_cuda_it_skips_and_writes_nothing(tmp_path):
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no CUDA device" in r.stdout and "skipped" in r.stdout
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_dry_run_validates_the_quarter_gpu_spec_and_runs_the_benchmark_code(tmp_path):
    r = run(tmp_path, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    spec = yaml.safe_load((tmp_path / "out" / "smoke_gpu.yaml").read_text())
    smoke = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
    assert spec["resources"] == {"cpu": 1, "gpu": 0.25} and spec["study"] == "smoke_gpu"
    assert {k: v for k, v in spec.items() if k not in ("resources", "study")} == \
        {k: v for k, v in smoke.items() if k not in ("resources", "study")}
    assert "12 trials" in r.stdout                                       # study run --dry-run's count
    assert "| transformer | 32 |" in r.stdout and "| lstm | 32 |" in r.stdout   # bench_gpu's table
    assert "dry run ok" in r.stdout and not (tmp_path / "out" / "results").exists()
