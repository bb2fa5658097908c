"""The spec reference: every key a spec may set, read from the typed configs and the registries,
so it cannot go stale. `study params` prints it; `study params --markdown > docs/spec.md`
regenerates docs/spec.md (a test fails when the checked-in file differs).

A key's meaning is its field's `description`, else the comment on the line that declares it, else
HELP below (for keys whose declaration carries no comment).
"""
from __future__ import annotations

import functools
import inspect
import re
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from study.config import Spec, TrainConfig
from study.registry import MODELS, TASKS, Registry

REGENERATE = "study params --markdown > docs/spec.md"

# Meanings of keys declared without a comment (spec sections by dotted path, parameters by name).
HELP = {
    "study": "the study's name; results go to ROOT/<study>/",
    "task": "the task: a name, or {name: NAME, PARAM: value, ...} to fix task parameters too",
    "fixed": "PARAM: value pairs set for every trial",
    "grid": "PARAM: [values] crossed exhaustively; every combination is a cell, and every cell is run "
            "(arch and task are grid axes like any other)",
    "search": "PARAM: distribution sampled by Optuna inside each cell: {int: [lo, hi]}, "
              "{float: [lo, hi], log: true} or {choice: [a, b, ...]}",
    "trials_per_cell": "Optuna trials per cell (each one trained once per seed)",
    "objective": "what Optuna optimises in each cell (averaged over seeds); a list: multi-objective",
    "objective.metric": "a column of `trials`",
    "objective.mode": "maximise or minimise it",
    "budget": "how long every trial trains",
    "budget.steps": "optimiser steps per trial",
    "budget.eval_every": "steps between evaluations (each one a report: a metrics row and a lag curve)",
    "budget.max_wall_s": "stop a trial past this many seconds of training and evaluation (status timeout)",
    "budget.max_flops": "stop a trial once its training FLOPs reach this (status completed)",
    "scheduler": "early stopping of unpromising trials (single objective only)",
    "scheduler.asha": "Ray Tune's ASHA scheduler, on the first objective",
    "resources": "what one trial asks Ray for",
    "resources.cpu": "CPUs per trial (also torch's thread count)",
    "resources.per_arch": "a different request for some archs, e.g. {transformer: {cpu: 1, gpu: 1}}",
    "resources.per_arch.<arch>.cpu": "CPUs per trial of this arch",
    "resources.per_arch.<arch>.gpu": "GPUs per trial of this arch",
    "seeds": "every configuration is trained once per seed",
    "max_failures": "retries of a trial whose worker or node died (Ray's FailureConfig)",
    "max_concurrent": "at most this many trials at once; null: as many as the resources allow",
    "budget.checkpoint_every": "a trial checkpoints itself every this many evaluations",
    "scheduler.asha.grace_period": "evaluations every trial runs before ASHA may stop it",
    "scheduler.asha.reduction_factor": "ASHA keeps the best 1/reduction_factor at each rung",
    "log.tensorboard": "event files in each trial's folder: `tensorboard --logdir results/<study>/ray`",
    "log.mlflow": "one MLflow run per trial",
    "log.wandb": "one W&B run per trial, offline runs in results/<study>/wandb",
    "log.wandb.tags": "set on every run",
    # parameters
    "d_model": "width of the hidden state / residual stream",
    "n_layers": "stacked layers",
    "dropout": "dropout probability between layers",
    "lag": "the dependency distance the task plants (training draws it per lag_dist)",
    "n_symbols": "symbols to remember",
    "alphabet": "size of the symbol alphabet",
    "n_heads": "attention heads",
    "ff_mult": "feed-forward width as a multiple of d_model",
    "d_state": "state size of each channel's diagonal recurrence",
    "kernel_size": "convolution kernel size",
    "max_hops": "most repetitions of the shared layer (adaptive computation time)",
    "ponder_weight": "weight of the ponder cost in the loss",
    "n_pairs": "key-value pairs shown before the queries",
    "cutoff": "low-pass cutoff of the white-noise input, as a fraction of the sampling rate",
    "n_scored": "output steps scored per sequence",
    "upsample": "each pixel repeated this many steps",
    "permute": "a fixed random permutation of the pixels",
    "lr": "Adam learning rate",
    "batch_size": "sequences per optimiser step",
    "weight_decay": "Adam weight decay",
}


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    range: str
    users: str          # which archs or tasks take it ("all" for training parameters)
    meaning: str


# ---- rendering one field -------------------------------------------------------------------

def type_name(t: Any) -> str:
    if t is type(None):
        return "null"
    if t is Any:
        return "any"
    origin = get_origin(t)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(t))
    if origin is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(t))
    if origin is list:
        return f"list of {type_name(get_args(t)[0])}"
    if origin is dict:
        k, v = get_args(t)
        return f"mapping {type_name(k)} -> {type_name(v)}"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return "mapping"
    return getattr(t, "__name__", str(t))


def value(v: Any) -> str:
    """A default as it would be written in YAML."""
    if v is PydanticUndefined:
        return "required"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, BaseModel):
        return "see below"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
    return str(v)


def bounds(field) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sym} {getattr(m, attr)}")
        if getattr(m, "min_length", None):
            out.append(f"at least {m.min_length} item{'s' if m.min_length > 1 else ''}")
        if getattr(m, "pattern", None):
            out.append(f"matches {m.pattern}")
    return ", ".join(out)


@functools.lru_cache(maxsize=None)
def comment(model: type[BaseModel], name: str) -> str:
    """The comment on the line declaring `name` in the class of `model`'s MRO that declares it."""
    for klass in model.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            try:
                lines = inspect.getsource(klass).splitlines()
            except (OSError, TypeError):
                return ""
            for ln in lines:
                if re.match(rf"\s+{name}\s*:", ln) and "  # " in ln:
                    return ln.split("  # ", 1)[1].strip()
            return ""
    return ""


def meaning(model: type[BaseModel], name: str, path: str) -> str:
    """A spec section's HELP entry wins over a terse comment (`in evaluations`); for parameters
    the declaration's own comment wins."""
    field = model.model_fields[name]
    text = (field.description or (path in HELP and "." in path and HELP[path]) or comment(model, name)
            or HELP.get(path) or HELP.get(name, ""))
    return re.sub(r"\bNone\b", "null", text)        # what a YAML spec writes


def window_type(key: str, t: str) -> str:
    # the spec writes an untruncated window as `full` (stored as null in Parquet)
    return "int or full" if key == "window" else t


# ---- the tables ----------------------------------------------------------------------------

def spec_rows(model: type[BaseModel] = Spec, prefix: str = "") -> list[Row]:
    """The spec's own keys (sections and their options), nested models flattened to dotted paths."""
    rows = []
    for name, f in model.model_fields.items():
        path = prefix + name
        rows.append(Row(path, type_name(f.annotation), value(f.get_default(call_default_factory=True)),
                        bounds(f), "", meaning(model, name, path)))
        for sub, at in submodels(f.annotation):
            rows += spec_rows(sub, f"{path}{at}.")
    return rows


def submodels(t: Any) -> list[tuple[type[BaseModel], str]]:
    """Models nested in an annotation, with the path step to them ('' or '.<arch>' for a mapping)."""
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [(t, "")]
    origin = get_origin(t)
    if origin is dict:
        return [(m, ".<arch>") for m, _ in submodels(get_args(t)[1])]
    out, seen = [], set()
    for a in get_args(t) if origin in (Union, types.UnionType, list) else ():
        for m, at in submodels(a):
            if m not in seen:
                seen.add(m)
                out.append((m, at))
    return out


def train_rows() -> list[Row]:
    return [Row(k, window_type(k, type_name(f.annotation)), value(f.default), bounds(f), "all",
                meaning(TrainConfig, k, k)) for k, f in TrainConfig.model_fields.items()]


def registry_rows(reg: Registry) -> list[Row]:
    """One row per key and per distinct (type, default, range, meaning), naming the entries that
    share it: `lag` defaults to 16 in most tasks but to 128 in `text`."""
    groups: dict[tuple, list[str]] = {}
    for n in reg.names():
        cfg = reg.get(n).config
        for k, f in cfg.model_fields.items():
            sig = (k, type_name(f.annotation), value(f.default), bounds(f), meaning(cfg, k, k))
            groups.setdefault(sig, []).append(n)
    order = {k: i for i, k in enumerate(dict.fromkeys(sig[0] for sig in groups))}
    rows = []
    for sig, users in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], -len(kv[1]), kv[1])):
        k, t, d, b, m = sig
        who = "all" if len(users) == len(reg.names()) else ", ".join(users)
        rows.append(Row(k, t, d, b, who, m))
    return rows


def sections() -> list[tuple[str, str, list[Row]]]:
    """(title, introduction, rows) for each table of the reference."""
    names = [Row("arch", "one of " + ", ".join(MODELS.names()), "required", "", "",
                 "the architecture (`study list` describes each)"),
             Row("task", "one of " + ", ".join(TASKS.names()), "required", "", "",
                 "the memory task; a grid axis, or the spec's `task:`")]
    return [
        ("Grid axes", "`arch` and `task` are set in `grid` (crossed) or `fixed` like any parameter, "
         "but are never searched.", names),
        ("Spec keys", "The sections of a study spec and their options. `task`, `fixed`, `grid` and "
         "`search` take the parameters listed in the tables below.", spec_rows()),
        ("Training parameters", "Taken by every trial, whatever its arch and task.", train_rows()),
        ("Task parameters", "Passed to the cell's task only; a task that does not take one records "
         "it as null. Tasks: " + ", ".join(TASKS.names()) + ".", registry_rows(TASKS)),
        ("Model parameters", "Passed to the cell's arch only; an arch that does not take one records "
         "it as null. Archs: " + ", ".join(MODELS.names()) + ".", registry_rows(MODELS)),
    ]


COLUMNS = ("key", "type", "default", "range", "used by", "meaning")


def markdown() -> str:
    out = ["# Spec reference", "",
           f"Generated from the configs and registries by `{REGENERATE}`; do not edit by hand.",
           "What the keys mean together, and how a spec becomes cells and trials: "
           "[design.md](design.md), \"The study spec\".", ""]
    for title, intro, rows in sections():
        spec_table = title in ("Spec keys", "Grid axes")
        cols = COLUMNS if not spec_table else tuple(c for c in COLUMNS if c != "used by")
        out += [f"## {title}", "", intro, "", "| " + " | ".join(cols) + " |",
                "| " + " | ".join("---" for _ in cols) + " |"]
        for r in rows:
            cells = [f"`{r.key}`", r.type, r.default, r.range, r.users, r.meaning]
            if spec_table:
                del cells[4]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out[:-1]) + "\n"


def text() -> str:
    out = []
    for title, _, rows in sections():
        out.append(f"{title}:")
        w = max(len(r.key) for r in rows)
        for r in rows:
            detail = ", ".join(x for x in (r.type, f"default {r.default}", r.range) if x)
            users = f" [{r.users}]" if r.users and r.users != "all" else ""
            out.append(f"  {r.key:<{w}}  {detail}{users}")
            if r.meaning:
                out.append(f"  {'':<{w}}  {r.meaning}")
        out.append("")
    return "\n".join(out[:-1]) + "\n"
