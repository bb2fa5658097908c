"""Whether one trial's configuration can run, decided without training it: the spec loader asks
this of every configuration a cell can reach, so invalid ones are refused before anything runs.

Two levels. Cheap rules run on every configuration: the types and ranges of every config, window
within seq_len, seq_len holding the lag, d_model split evenly across n_heads. With build=True the
model is also built on PyTorch's meta device, so its constructor runs every check a family makes
without allocating a parameter (d_model = 10^9 costs nothing); a meta build takes 1-70 ms, so the
loader asks for it only at the corners of each cell's search space.
"""
from __future__ import annotations

from typing import Any

import torch

from study.config import known_params, resolve
from study.meta import on_meta



def _key_in(msg: str, values: dict[str, Any]) -> str | None:
    """The parameter a family's error message names first (its messages start with the name)."""
    names = sorted((k for k in known_params() if k in msg), key=lambda k: (msg.index(k), -len(k)))
    return names[0] if names else None


def config_problem(values: dict[str, Any], cache: dict | None = None,
                   build: bool = True) -> tuple[str | None, str] | None:
    """None when the configuration can run, else (the key to blame or None, the reason).
    Raises pydantic's ValidationError for a wrong type or range. `cache` memoises tasks and builds."""
    from study.models import build_model
    from study.tasks import build_task
    cache = {} if cache is None else cache
    r = resolve(values)
    tkey = ("task", r.task, r.task_cfg)
    if tkey not in cache:
        try:
            cache[tkey] = build_task(r.task, r.task_cfg)
        except (ValueError, OSError) as e:           # a text corpus that is missing or too short
            cache[tkey] = (_key_in(str(e), values) or "path", str(e).splitlines()[0])
    task = cache[tkey]
    if isinstance(task, tuple):
        return task
    seq_len, window = r.train.seq_len or task.default_seq_len(), r.train.window
    if window is not None and window > seq_len:
        return "window", f"window {window} is larger than seq_len {seq_len}"
    if r.train.seq_len is not None and task.memory_rule == "threshold":
        need = task.default_seq_len(r.task_cfg.lag)
        if seq_len < need:
            return "seq_len", f"seq_len {seq_len} cannot hold lag {r.task_cfg.lag} (it needs {need} steps)"
    heads = getattr(r.model, "n_heads", None)
    if heads and r.model.d_model % heads:       # every attention family splits d_model across heads
        return "d_model", f"d_model {r.model.d_model} is not divisible by n_heads {heads}"
    if not build:
        return None
    mkey = ("model", r.arch, r.model, task.io, seq_len, window)
    if mkey not in cache:
        cache[mkey] = None
        try:
            with on_meta():
                build_model(r.arch, r.model, task.io, seq_len, window)
        except ValueError as e:
            msg = str(e).splitlines()[0]
            cache[mkey] = (_key_in(msg, values), msg)
        except Exception:                            # noqa: BLE001 - an op the meta device lacks:
            pass                                     # not the spec's fault, the trial will tell
    return cache[mkey]
