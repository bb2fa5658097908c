"""Shared test helpers: tiny specs and a way to run the real `study` command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)   # the suite shares 2 cores with Ray workers


def run_cli(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (what a user types)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "study.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=kw.get("cwd", ROOT))


TINY = """\
study: {name}
task: {{name: copy, n_symbols: 2, alphabet: 4}}
grid:
  arch: [lstm]
  lag: [4]
search:
  lr: {{float: [1.0e-3, 1.0e-2], log: true}}
fixed: {{d_model: 16, batch_size: 8, eval_batch: 8}}
trials_per_cell: 2
budget: {{steps: 20, eval_every: 10}}
"""


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str, name: str = "spec.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write
