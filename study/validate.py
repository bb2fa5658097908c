"""Reading a study spec file and validating it: a bad spec is refused before anything runs.

The spec's data model is study/config.py. This module turns a file into a `Spec` within limits
(its size, YAML aliases, cells, trials), names the valid keys when pydantic refuses one, and
builds every configuration a cell can reach (`check_reachable`), so a study never loses trials to
a configuration the spec could have been told was wrong. Every error is a `SpecError` whose
message is one line naming the file and the key.
"""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from study.config import (MAX_TRIALS, SPECIAL, Dist, Spec, cells, check_choices, given_values, known_params,
                          norm_window, searched, short, yaml_load)
from study.errors import SpecError
from study.registry import MODELS, TASKS

# Limits on what one spec may ask for: each is a one-line error, so a typo or a hostile file
# cannot make the loader read forever, expand YAML aliases exponentially or plan a million cells.
# (MAX_TRIALS and MAX_CHOICES are study/config.py's: the Spec model checks them too.)
MAX_SPEC_BYTES = 1 << 20            # a spec is a page of YAML; /dev/zero is not
MAX_NODES = 20_000                  # YAML values after alias expansion (an "alias bomb" is ~10^9)
MAX_CELLS = 10_000


# ---- loading and validation -----------------------------------------------------------------

def _too_big(obj: Any, limit: int) -> bool:
    """More than `limit` values once aliases are expanded (walks at most limit + 1 of them)."""
    n, stack = 0, [obj]
    while stack:
        o = stack.pop()
        n += 1
        if n > limit:
            return True
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return False


def _keys_at(loc: tuple) -> list[str] | None:
    """The valid keys of the spec section at loc (a pydantic error location), or None."""
    cur: Any = Spec
    skip_key = False
    for part in loc:
        if skip_key or isinstance(part, int):
            skip_key = False
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel) and part in cur.model_fields):
            return None
        ann = cur.model_fields[part].annotation
        cur, skip_key = _model_in(ann)
    return list(cur.model_fields) if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _model_in(ann: Any) -> tuple[Any, bool]:
    """(the pydantic model inside an annotation, whether a dict key comes first in a location)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    origin = get_origin(ann)
    for arg in get_args(ann):
        m, _ = _model_in(arg)
        if m is not None:
            return m, origin is dict
    return None, False


def _pydantic_line(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    # a Union's member type appears in the location ("objective.Objective.metric"): not a key
    loc = tuple(p for p in e["loc"] if isinstance(p, int) or not re.match(r"^([A-Z]\w*|list\[.*|dict\[.*|str|int|float|bool|none)$", str(p)))
    key = ".".join(str(p) for p in loc) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        valid = _keys_at(loc[:-1]) or list(Spec.model_fields)
        msg = f"unknown key (valid: {', '.join(valid)})"
    return f"{path}: {key}: {msg}"


def read_spec_text(path: str | Path) -> str:
    """A spec file's text: at most MAX_SPEC_BYTES, UTF-8, or a one-line SpecError."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a short YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def load_spec(path: str | Path) -> Spec:
    path = str(path)
    return parse_spec(read_spec_text(path), path)


def parse_spec(text: str, path: str = "<spec>", check_values: bool = True) -> Spec:
    """check_values=False skips building every reachable configuration (study folders that were
    validated when they were run: `status`, `sql`, `report`, `resume`)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a short YAML file")
    try:
        raw = yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise SpecError(f"{path}: {where}: malformed YAML ({problem})") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: (top level): expected a mapping with at least 'study'")
    if _too_big(raw, MAX_NODES):
        raise SpecError(f"{path}: (top level): more than {MAX_NODES} values once YAML aliases (*name) are "
                        "expanded; a spec is a short file")
    bad = next((k for k in raw if not isinstance(k, str)), None)
    if bad is not None:
        raise SpecError(f"{path}: {short(bad)}: keys are names (valid: {', '.join(Spec.model_fields)})")
    try:
        spec = Spec(**raw)
    except ValidationError as e:
        raise SpecError(_pydantic_line(path, e)) from None
    except RecursionError:
        raise SpecError(f"{path}: (top level): nested too deeply") from None
    validate(spec, path, check_values)
    return spec


def _check_name(path: str, key: str, name: Any, registry) -> None:
    if not isinstance(name, str) or name not in registry:
        raise SpecError(f"{path}: {key}: unknown {registry.kind} {short(name)} (valid: {', '.join(registry.names())})")


def _finite(where: str, v: Any) -> None:     # where: "<file>: <section>"
    """No inf or nan anywhere in the parameter sections (YAML's .inf and .nan)."""
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(f"{where}: {v} is not a finite number")
    if isinstance(v, dict):
        for k, x in v.items():
            _finite(f"{where}.{k}", x)
    if isinstance(v, list):
        for x in v:
            _finite(where, x)


def validate(spec: Spec, path: str, check_values: bool = True) -> None:
    """Everything that can be checked before a trial runs; raises SpecError on the first problem."""
    known = known_params()
    if spec.task is not None and not isinstance(spec.task_name, (str, type(None))):
        raise SpecError(f"{path}: task.name: expected one task name (valid: {', '.join(TASKS.names())})")
    sources = [("task", spec.task_params), ("fixed", spec.fixed), ("grid", spec.grid), ("search", spec.search)]
    for section, d in sources:
        _finite(f"{path}: {section}", d)
        for k in d:
            if k not in known and k not in SPECIAL:
                close = [n for n in sorted(known) if n[:3] == k[:3]]
                hint = f"; did you mean {', '.join(close[:3])}?" if close else ""
                raise SpecError(f"{path}: {section}.{k}: unknown parameter (valid: arch, task, "
                                f"{', '.join(sorted(known))}){hint}")
    for k in spec.search:
        if k in SPECIAL:
            raise SpecError(f"{path}: search.{k}: {k} is a grid axis, not a searched parameter")
    n_cells = 1
    for k, vals in spec.grid.items():
        if not vals:
            raise SpecError(f"{path}: grid.{k}: empty list")
        # two equal values would be two cells with one label, sharing one Optuna study
        check_choices(f"{path}: grid.{k}", vals, [norm_window(v) if k == "window" else v for v in vals])
        n_cells *= len(vals)
    if n_cells > MAX_CELLS:
        raise SpecError(f"{path}: grid: {n_cells} cells (at most {MAX_CELLS}); split the study")
    n_trials = n_cells * spec.trials_per_cell * len(spec.seeds)
    if n_trials > MAX_TRIALS:
        raise SpecError(f"{path}: trials_per_cell: {n_cells} cells x {spec.trials_per_cell} trials x "
                        f"{len(spec.seeds)} seeds = {n_trials} trials (at most {MAX_TRIALS})")
    for k in set(spec.grid) & set(spec.fixed):
        raise SpecError(f"{path}: grid.{k}: also set in fixed; set it in one place")
    for k in set(spec.search) & (set(spec.grid) | set(spec.fixed)):
        raise SpecError(f"{path}: search.{k}: also set in grid or fixed; set it in one place")
    for k in set(spec.task_params) & (set(spec.grid) | set(spec.fixed) | set(spec.search)):
        raise SpecError(f"{path}: task.{k}: also set in grid, fixed or search; set it in one place")
    if "task" in spec.fixed and spec.task is not None:
        raise SpecError(f"{path}: fixed.task: also set in task; set it in one place")
    dists = searched(spec, path)
    if len(spec.objectives) > 1 and spec.sampler == "grid":
        raise SpecError(f"{path}: sampler: 'grid' takes one objective")
    if spec.scheduler and spec.scheduler.asha and len(spec.objectives) > 1:
        raise SpecError(f"{path}: scheduler.asha: ASHA early stopping takes a single objective")

    archs = spec.grid.get("arch", [spec.fixed.get("arch")])
    tasks = spec.grid.get("task", [spec.fixed.get("task", spec.task_name)])
    for a in archs:
        if a is None:
            raise SpecError(f"{path}: grid.arch: no arch given (valid: {', '.join(MODELS.names())})")
        _check_name(path, "grid.arch" if "arch" in spec.grid else "fixed.arch", a, MODELS)
    for a in spec.resources.per_arch:
        _check_name(path, f"resources.per_arch.{a}", a, MODELS)
    for t in tasks:
        if t is None:
            raise SpecError(f"{path}: task: no task given (valid: {', '.join(TASKS.names())})")
        _check_name(path, "grid.task" if "task" in spec.grid else "task", t, TASKS)
    if check_values:
        check_reachable(spec, path, dists, sources)


def _probes(dists: dict[str, Dist]) -> list[tuple[str | None, dict[str, Any], bool]]:
    """Search samples that stand for every one the spec can draw: (the key that varies, sample,
    whether it is a corner). The corners (every key at its low end, every key at its high end)
    come first and get a full model build (study.trial_check).

    Every combination when there are few; otherwise each key over all its points with the others
    at their low end, then at their high end (window high with seq_len low, d_model against both
    ends of n_heads)."""
    pts = {k: d.points() for k, d in dists.items()}
    keys = list(pts)
    low, high = {k: v[0] for k, v in pts.items()}, {k: v[-1] for k, v in pts.items()}
    out: list = [(None, low, True), ("(high)", high, True)]
    total = math.prod(len(v) for v in pts.values()) if pts else 1
    if total <= 256:
        for combo in itertools.product(*(pts[k] for k in keys)):
            sample = dict(zip(keys, combo))
            out.append((next((k for k in keys if sample[k] != low[k]), None), sample, False))
        return out
    for base in (low, high):
        for k in keys:
            out.extend((k, {**base, k: v}, False) for v in pts[k])
    return out


def check_reachable(spec: Spec, path: str, dists: dict[str, Dist], sources) -> None:
    """Build every configuration a cell can reach (every choice, both ends and the first and last
    values of every range) and refuse the spec if any is invalid: a study must never lose trials
    to configurations the spec could have been told were wrong."""
    from study.trial_check import config_problem
    seen: dict = {}
    for cell in cells(spec):
        for blame, sample, corner in _probes(dists):
            values = given_values(spec, cell, sample)
            try:
                problem = config_problem(values, seen, build=corner)
            except ValidationError as e:
                err = e.errors()[0]
                key = ".".join(str(p) for p in err["loc"])
                problem = (key, err["msg"].removeprefix("Value error, "))
            if problem is None:
                continue
            key, msg = problem
            if key in dists:
                blame = key
            if blame == "(high)":
                if len(dists) > 1:
                    raise SpecError(f"{path}: search: with every searched value at the high end of its range "
                                    f"the configuration is invalid: {msg} (in cell {cell.label})")
                blame = next(iter(dists))
            if blame is not None:       # the sample with every key at its low end passed
                d = dists[blame]
                fix = ("; give search values that are all valid: a choice list, or a step "
                       "(e.g. {int: [32, 512], step: 32})") if d.kind == "int" and "divisible" in msg else ""
                raise SpecError(f"{path}: search.{blame}: {blame}={sample[blame]} can be sampled and is invalid: "
                                f"{msg} (in cell {cell.label}){fix}")
            key = key or ("arch" if "arch" in spec.grid else "fixed")
            section = next((s for s, d in sources if key in d), "fixed")
            where = f"{section}.{key}" if key != section else section
            raise SpecError(f"{path}: {where}: {msg} (in cell {cell.label})")
