"""The sweep's per-trial bookkeeping (issue 19, part 2): progress counters kept per finished trial
instead of recounted over every slot, printing rate-limited, the searcher's suggest scanning on
from a cursor, and meta-device builds that skip the initialisers (and so torch._dynamo)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from study.validate import parse_spec
from study.results import Store

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
study: prog
task: {name: copy, n_symbols: 2, alphabet: 4}
grid: {arch: [lstm], lag: [4, 8, 16]}
search: {lr: {float: [1.0e-3, 1.0e-2], log: true}}
fixed: {d_model: 8, batch_size: 4, eval_batch: 4}
trials_per_cell: 3
seeds: [0, 1]
budget: {steps: 2, eval_every: 1}
"""


def _callback(tmp_path):
    from study.sweep import CellSearcher, ResultsCallback
    spec = parse_spec(SPEC)
    (tmp_path / "prog").mkdir()
    store = Store(str(tmp_path / "prog"))
    searcher = CellSearcher(spec, store, {})
    return spec, searcher, ResultsCallback(spec, store, searcher, "test")


def _finish(cb, searcher, ray_id: str, cfg: dict, memory_length: int | None) -> None:
    """What Tune does when a trial ends: the searcher hears of it, then the callback."""
    result = {"status": "completed", "memory_length": memory_length, "iteration": 1}
    searcher.on_trial_complete(ray_id, result)
    cb.on_trial_complete(0, [], SimpleNamespace(config=cfg, last_result=result))


def _issue_all(searcher) -> list[tuple[str, dict]]:
    out = []
    while isinstance(cfg := searcher.suggest(f"r{len(out)}"), dict):
        out.append((f"r{len(out)}", cfg))
    return out


def _no_rescan(monkeypatch, searcher) -> None:
    for name in ("remaining", "cells_done"):     # what made progress O(slots) per trial
        monkeypatch.setattr(searcher, name, lambda: pytest.fail("progress rescanned the slots"))


def test_progress_counts_match_a_recount_and_never_rescan_the_slots(tmp_path, capsys, monkeypatch):
    spec, searcher, cb = _callback(tmp_path)
    issued = _issue_all(searcher)
    assert len(issued) == searcher.total() == 18
    assert searcher.cursor == len(searcher.slots)          # each suggest went on from the last slot
    _no_rescan(monkeypatch, searcher)
    cb.PROGRESS_EVERY_S = 3600.0                           # only the first and the last line print
    left = {}
    for _, cfg in issued:
        left[cfg["cell"]] = left.get(cfg["cell"], 0) + 1
    for i, (rid, cfg) in enumerate(issued):
        _finish(cb, searcher, rid, cfg, memory_length=i)
        left[cfg["cell"]] -= 1
        assert (cb.done, cb.cells_done) == (i + 1, sum(n == 0 for n in left.values()))
    monkeypatch.undo()
    assert cb.done == searcher.total() - searcher.remaining() and cb.cells_done == searcher.cells_done() == 3
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "trials finished" in ln]
    assert len(lines) == 2, lines                          # rate-limited, but the end always prints
    assert "cells done 0/3, trials finished 1/18" in lines[0]
    assert "cells done 3/3, trials finished 18/18 (completed 18)" in lines[1]
    assert f"best L* 17 ({issued[-1][1]['cell']})" in lines[1]


def test_progress_prints_again_once_the_interval_has_passed(tmp_path, capsys):
    spec, searcher, cb = _callback(tmp_path)
    issued = _issue_all(searcher)[:3]
    cb.PROGRESS_EVERY_S = 0.2
    _finish(cb, searcher, *issued[0], None)
    _finish(cb, searcher, *issued[1], None)                # within the interval: not printed
    time.sleep(0.25)
    _finish(cb, searcher, *issued[2], None)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "trials finished" in ln]
    assert [ln.split("trials finished ")[1].split()[0] for ln in lines] == ["1/18", "3/18"]


def test_on_meta_builds_the_same_shapes_as_a_real_build():
    from study.meta import on_meta
    from study.models import build_model
    from study.registry import MODELS
    from study.config import resolve, seq_len_of
    from study.tasks import build_task
    built = 0
    for arch in MODELS.names():
        r = resolve({"arch": arch, "task": "copy", "d_model": 16})
        io, T = build_task(r.task, r.task_cfg).io, seq_len_of(r)
        real = build_model(r.arch, r.model, io, T, r.train.window)
        try:
            with torch.device("meta"):
                build_model(r.arch, r.model, io, T, r.train.window)
        except RuntimeError:        # an arch whose constructor reads values: never built on meta
            continue
        with on_meta():
            meta = build_model(r.arch, r.model, io, T, r.train.window)
        built += 1
        assert [(n, p.shape) for n, p in real.named_parameters()] == \
               [(n, p.shape) for n, p in meta.named_parameters()], arch
        assert all(p.device.type == "meta" for p in meta.parameters()), arch
    assert built >= len(MODELS.names()) - 3
    assert torch.zeros(1).device.type == "cpu"            # the mode is gone afterwards


PROBE = """
import sys, torch
from study.config import resolve, seq_len_of
from study.models import build_model
from study.tasks import build_task
from study.meta import on_meta
r = resolve({{"arch": "lstm", "task": "copy"}})
with {ctx}:
    build_model(r.arch, r.model, build_task(r.task, r.task_cfg).io, seq_len_of(r), None)
print("torch._dynamo" in sys.modules)
"""


def test_on_meta_does_not_import_the_compiler():
    """The plain meta device imports torch._dynamo at the first initialiser (seconds of every
    `study run`'s start-up and of every trial worker's); on_meta does not."""
    out = {}
    for ctx in ('torch.device("meta")', "on_meta()"):
        p = subprocess.run([sys.executable, "-c", PROBE.format(ctx=ctx)], capture_output=True, text=True, cwd=ROOT)
        assert p.returncode == 0, p.stderr[-2000:]
        out[ctx] = p.stdout.strip()
    assert out == {'torch.device("meta")': "True", "on_meta()": "False"}
