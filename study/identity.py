"""Content-addressed cells and trials (docs/design.md, "Identity").

A cell's id is a short hash of what defines its trials, never its position in the grid: the
values its arch, task and training use (task, fixed and grid values, less those equal to their
default), the search space of those parameters, the budget apart from its length (`eval_every`,
`max_wall_s`, `max_flops`) and the objectives. Reordering a grid list, moving a key between
`fixed` and `grid`, adding a grid axis whose values include the old default, more seeds, more
`trials_per_cell` or a larger `budget.steps` keep every id; a change in meaning makes a new cell.

A trial id is `<cell>-t<slot>-s<seed>`; a trial continued to a larger `budget.steps` is a trial of
its own, `<cell>-t<slot>-b<steps>-s<seed>`, so the row at the shorter budget stays as it was.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, replace
from typing import Any

from pydantic_core import PydanticUndefined

from study.config import SPECIAL, Budget, Cell, Spec, TrainConfig, given_values, searched
from study.registry import MODELS, TASKS

TRIAL_ID = re.compile(r"^(?P<cell>.+)-t(?P<slot>\d+)(?:-b(?P<steps>\d+))?-s(?P<seed>\d+)$")
HASH_CHARS = 12                      # 48 bits: a collision among 10,000 cells has odds ~2e-7
NOT_IDENTITY = ("steps", "checkpoint_every")   # budget keys that may change without changing a trial's meaning
DEFAULT_OBJECTIVE = [{"metric": "memory_length", "mode": "max"}]


def _configs(arch: Any, task: Any) -> list | None:
    """The pydantic configs a cell's values go to (resolve()), or None when arch/task is unknown."""
    try:
        return [MODELS.get(arch).config, TASKS.get(task).config, TrainConfig]
    except (KeyError, TypeError):
        return None


def _used(configs: list | None, key: str) -> bool:
    return configs is None or key in SPECIAL or any(key in c.model_fields for c in configs)


def _is_default(configs: list | None, key: str, value: Any) -> bool:
    """The value every config taking `key` would use anyway (so stating it changes nothing)."""
    if configs is None or key in SPECIAL:
        return False
    takers = [c.model_fields[key] for c in configs if key in c.model_fields]
    return bool(takers) and all(f.default is not PydanticUndefined and type(f.default) is type(value)
                                and f.default == value for f in takers)


def cell_key(spec: Spec, cell: Cell, dists: dict | None = None) -> dict:
    """What defines a cell's trials, as plain JSON-able data (the input of its id)."""
    dists = searched(spec) if dists is None else dists
    values = given_values(spec, cell)
    configs = _configs(values.get("arch"), values.get("task"))
    key: dict[str, Any] = {
        "values": {k: v for k, v in values.items() if _used(configs, k) and not _is_default(configs, k, v)},
        "search": {k: {**asdict(d), "choices": list(d.choices)} for k, d in dists.items() if _used(configs, k)},
        "budget": {k: v for k, v in spec.budget.model_dump(exclude_defaults=True).items() if k not in NOT_IDENTITY},
    }
    objectives = [o.model_dump() for o in spec.objectives]
    if objectives != DEFAULT_OBJECTIVE:
        key["objective"] = objectives
    return {k: v for k, v in key.items() if v}


def digest(key: dict) -> str:
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return "c" + hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def name_cells(spec: Spec, grid: list[Cell]) -> list[Cell]:
    """The grid's cells named by content. Two grid points whose trials would be the same (a grid
    axis that one arch does not take) are told apart by all their grid values, whatever the order."""
    dists = searched(spec)
    keys = [cell_key(spec, c, dists) for c in grid]
    ids = [digest(k) for k in keys]
    count: dict[str, int] = {}
    for i in ids:
        count[i] = count.get(i, 0) + 1
    for n, c in enumerate(grid):
        if count[ids[n]] > 1:
            ids[n] = digest({**keys[n], "grid": dict(c.values)})
    return [replace(c, name=i) for c, i in zip(grid, ids)]


def canonical_label(cell: Cell) -> str:
    """The label with its axes sorted: the same whatever order the spec lists them in."""
    return ",".join(f"{k}={'full' if v is None else v}" for k, v in sorted(cell.values)) or "all"


def optuna_name(cell: Cell, legacy: dict | None = None) -> str:
    """The cell's Optuna study: a cell from before content addressing keeps the label it had."""
    old = {v["id"]: v["optuna"] for v in (legacy or {}).values()}.get(cell.id)
    return old or f"{canonical_label(cell)} {cell.id}"


def study_cells(spec: Spec, legacy: dict | None = None) -> list[Cell]:
    """The spec's cells as this study names them: a cell that a study from before content
    addressing already ran keeps its positional id (legacy: content id -> {"id", "optuna"})."""
    from study.config import cells
    return [replace(c, name=legacy[c.name]["id"]) if legacy and c.name in legacy else c for c in cells(spec)]


def trial_id(cell_id: str, slot: int, seed: int, steps: int | None = None) -> str:
    return f"{cell_id}-t{slot:03d}" + (f"-b{steps}" if steps else "") + f"-s{seed}"


def parse_trial_id(tid: str) -> tuple[str, int, int, int | None] | None:
    """(cell id, slot, seed, continued-to steps or None), or None for a name that is not a trial id."""
    m = TRIAL_ID.match(tid)
    if not m:
        return None
    return m["cell"], int(m["slot"]), int(m["seed"]), int(m["steps"]) if m["steps"] else None


def continuable(row: dict, budget: Budget) -> bool:
    """A finished trial that a larger budget.steps continues: it completed its own budget (not
    stopped by its FLOP cap, a timeout, a pruning or a failure) and that budget was shorter."""
    if row.get("status") != "completed" or row.get("steps") is None or row["steps"] >= budget.steps:
        return False
    return not (budget.max_flops is not None and (row.get("train_flops") or 0) >= budget.max_flops)


class Wanted:
    """Which trial each (cell, slot, seed) needs under the current budget, given the finished
    trials (trial id -> trials row): its first run; or, when that run (or its latest continuation)
    completed a shorter budget, a continuation to budget.steps from that run's final checkpoint."""

    def __init__(self, budget: Budget, finished: dict[str, dict]):
        self.budget = budget
        self.latest: dict[tuple[str, int, int], tuple[str, dict]] = {}   # (cell, slot, seed) -> its longest run
        for tid, row in finished.items():
            p = parse_trial_id(tid)
            if p is None:
                continue
            cur = self.latest.get(p[:3])
            if cur is None or (row.get("steps") or 0) > (cur[1].get("steps") or 0):
                self.latest[p[:3]] = (tid, row)

    def want(self, cell_id: str, slot: int, seed: int) -> tuple[str, str | None]:
        """(the trial id needed, the finished trial it continues from, or None)."""
        got = self.latest.get((cell_id, slot, seed))
        if got is None:
            return trial_id(cell_id, slot, seed), None
        tid, row = got
        if continuable(row, self.budget):
            return trial_id(cell_id, slot, seed, self.budget.steps), tid
        return tid, None
