"""The study spec (search_spaces/*.yaml): loading, validation, cells, and one trial's flat config.

Keys are flat names shared by YAML, Parquet columns and plots (docs/design.md, "The study spec").
Every error is a `SpecError` whose message is one line naming the file and the key.
"""
from __future__ import annotations

import itertools
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import study.models  # noqa: F401  (registers the archs)
import study.tasks  # noqa: F401  (registers the tasks)
from study.errors import SpecError, UsageError  # noqa: F401  (re-exported: `from study.config import UsageError`)
from study.registry import MODELS, TASKS
from study.trackers import Log


class TrainConfig(BaseModel):
    """Training and evaluation parameters of one trial (any may be fixed, gridded or searched)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    window: int | None = Field(None, ge=1)      # TBPTT chunk / attention span / KV budget; None = full
    seq_len: int | None = Field(None, ge=2)     # None: what the task needs for its lag
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)  # global-norm clip (PAPERS.md §1); None: off (indrnn: step_grad_clip)
    tau: float = Field(0.9, gt=0, le=1)         # memory-length threshold on the normalised score
    max_lag: int | None = Field(None, ge=1)     # top of the evaluation ladder; None = 4 x lag
    eval_batch: int = Field(64, ge=1)           # sequences per ladder lag
    max_eval_s: float | None = Field(None, gt=0)  # evaluation time cap per evaluation


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int = Field(1000, ge=1)
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(1, ge=1)      # in evaluations
    max_wall_s: float | None = Field(None, gt=0)
    max_flops: float | None = Field(None, gt=0)


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: Literal["memory_length", "train_flops", "final_loss", "wall_s", "params", "state_size"] = "memory_length"
    mode: Literal["max", "min"] = "max"


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)          # fractional: 0.25 packs four small trials on one GPU


class Resources(Request):
    # e.g. {transformer: {cpu: 1, gpu: 1}}: attention at long seq_len gets a whole GPU while small
    # recurrent trials share one
    per_arch: dict[str, Request] = {}

    def for_arch(self, arch: str) -> Request:
        return self.per_arch.get(arch, Request(cpu=self.cpu, gpu=self.gpu))


class Asha(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    grace_period: int = Field(1, ge=1)          # in evaluations
    reduction_factor: float = Field(2, gt=1)


class Scheduler(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    asha: Asha | None = None


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    study: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    task: Union[str, dict[str, Any], None] = None
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    search: dict[str, dict[str, Any]] = {}
    trials_per_cell: int = Field(1, ge=1)
    objective: Union[Objective, list[Objective]] = Objective()
    budget: Budget = Budget()
    scheduler: Scheduler | None = None
    sampler: Literal["tpe", "nsga2", "random", "grid"] | None = None   # None: tpe, nsga2 if multi-objective
    resources: Resources = Resources()
    seeds: list[int] = Field([0], min_length=1)
    max_failures: int = Field(2, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    log: Log | None = None          # trackers that also receive the curves (study/trackers.py)

    @property
    def objectives(self) -> list[Objective]:
        return self.objective if isinstance(self.objective, list) else [self.objective]

    @property
    def task_params(self) -> dict[str, Any]:
        if isinstance(self.task, dict):
            return {k: v for k, v in self.task.items() if k != "name"}
        return {}

    @property
    def task_name(self) -> str | None:
        if isinstance(self.task, str):
            return self.task
        if isinstance(self.task, dict):
            return self.task.get("name")
        return None


SPECIAL = ("arch", "task")


def known_params() -> dict[str, Any]:
    """Every flat name a spec may set, with its annotation: train, model and task parameters."""
    out = {k: f.annotation for k, f in TrainConfig.model_fields.items()}
    out.update(MODELS.all_fields())
    out.update(TASKS.all_fields())
    return out


# ---- search distributions -------------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    kind: Literal["int", "float", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()


def parse_dist(where: str, raw: Any) -> Dist:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping like {{float: [1e-4, 1e-2], log: true}}")
    kinds = [k for k in ("int", "float", "choice") if k in raw]
    extra = set(raw) - {"int", "float", "choice", "log"}
    if extra:
        raise SpecError(f"{where}: unknown key {sorted(extra)[0]!r} (valid: int, float, choice, log)")
    if len(kinds) != 1:
        raise SpecError(f"{where}: give exactly one of int, float, choice")
    kind = kinds[0]
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{where}.log: expected true or false")
    if kind == "choice":
        choices = raw["choice"]
        if not isinstance(choices, list) or not choices:
            raise SpecError(f"{where}.choice: expected a non-empty list")
        return Dist("choice", choices=tuple(choices))
    rng = raw[kind]
    if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)):
        raise SpecError(f"{where}.{kind}: expected [low, high]")
    low, high = rng
    if kind == "int" and not all(float(v).is_integer() for v in rng):
        raise SpecError(f"{where}.int: bounds must be whole numbers")
    if low >= high:
        raise SpecError(f"{where}.{kind}: range is the wrong way round ({low} >= {high})")
    if log and low <= 0:
        raise SpecError(f"{where}.{kind}: a log range needs low > 0")
    return Dist(kind, low=low, high=high, log=log)


# ---- cells ----------------------------------------------------------------------------------

def fmt(v: Any) -> str:
    return "full" if v is None else str(v)


@dataclass(frozen=True)
class Cell:
    index: int
    values: tuple[tuple[str, Any], ...]     # the grid values of this cell, in grid order

    @property
    def id(self) -> str:
        return f"c{self.index:03d}"

    @property
    def label(self) -> str:
        """Human-readable and stable: also the Optuna study name of the cell."""
        return ",".join(f"{k}={fmt(v)}" for k, v in self.values) or "all"


def norm_window(v: Any) -> Any:
    return None if v == "full" else v


def cells(spec: Spec) -> list[Cell]:
    keys = list(spec.grid)
    combos = itertools.product(*(spec.grid[k] for k in keys)) if keys else [()]
    return [Cell(i, tuple((k, norm_window(v) if k == "window" else v) for k, v in zip(keys, combo)))
            for i, combo in enumerate(combos)]


def searched(spec: Spec, path: str = "<spec>") -> dict[str, Dist]:
    return {k: parse_dist(f"{path}: search.{k}", v) for k, v in spec.search.items()}


# ---- resolving one trial ---------------------------------------------------------------------

@dataclass(frozen=True)
class Resolved:
    arch: str
    task: str
    model: BaseModel
    task_cfg: BaseModel
    train: TrainConfig
    unused: tuple[str, ...]                 # set in the spec but not used by this cell's arch/task


def given_values(spec: Spec, cell: Cell, sampled: dict[str, Any] | None = None) -> dict[str, Any]:
    """Spec values for one trial, later sources winning: task, fixed, grid cell, search sample."""
    values: dict[str, Any] = {}
    if spec.task_name is not None:
        values["task"] = spec.task_name
    values.update(spec.task_params)
    values.update(spec.fixed)
    values.update(dict(cell.values))
    values.update(sampled or {})
    if "window" in values:
        values["window"] = norm_window(values["window"])
    return values


def resolve(values: dict[str, Any]) -> Resolved:
    """Split flat values into typed arch, task and train configs (pydantic validates the types)."""
    arch, task = values["arch"], values["task"]
    mf, tf, rf = MODELS.fields(arch), TASKS.fields(task), TrainConfig.model_fields
    params = {k: v for k, v in values.items() if k not in SPECIAL}
    model = MODELS.get(arch).config(**{k: v for k, v in params.items() if k in mf})
    task_cfg = TASKS.get(task).config(**{k: v for k, v in params.items() if k in tf})
    train = TrainConfig(**{k: v for k, v in params.items() if k in rf})
    unused = tuple(k for k in params if k not in mf and k not in tf and k not in rf)
    return Resolved(arch, task, model, task_cfg, train, unused)


def seq_len_of(r: Resolved) -> int:
    return r.train.seq_len or TASKS.get(r.task).cls(r.task_cfg).default_seq_len()


def flat_params(r: Resolved) -> dict[str, Any]:
    """The effective value of every parameter this trial uses (defaults included): its Parquet row."""
    out = {**r.train.model_dump(), **r.task_cfg.model_dump(), **r.model.model_dump()}
    out["seq_len"] = seq_len_of(r)
    return out


# ---- loading and validation -----------------------------------------------------------------

def _pydantic_line(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        valid = ", ".join(_section(e["loc"][:-1]).model_fields)
        msg = f"unknown key (valid: {valid})"
    return f"{path}: {key}: {msg}"


def _section(loc: tuple) -> type[BaseModel]:
    """The spec model a location points into (Spec, Budget, Log, ...), to list its valid keys."""
    model: type[BaseModel] = Spec
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        subs = [a for a in (get_args(field.annotation) or (field.annotation,))
                if isinstance(a, type) and issubclass(a, BaseModel)]
        if not subs:
            break
        model = subs[0]
    return model


def load_spec(path: str | Path) -> Spec:
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror})") from None
    return parse_spec(text, path)


def parse_spec(text: str, path: str = "<spec>") -> Spec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise SpecError(f"{path}: {where}: malformed YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: (top level): expected a mapping with at least 'study'")
    try:
        spec = Spec(**raw)
    except ValidationError as e:
        raise SpecError(_pydantic_line(path, e)) from None
    validate(spec, path)
    return spec


def _check_name(path: str, key: str, name: Any, registry) -> None:
    if name not in registry:
        raise SpecError(f"{path}: {key}: unknown {registry.kind} {name!r} (valid: {', '.join(registry.names())})")


def validate(spec: Spec, path: str) -> None:
    """Everything that can be checked before a trial runs; raises SpecError on the first problem."""
    known = known_params()
    sources = [("task", spec.task_params), ("fixed", spec.fixed), ("grid", spec.grid), ("search", spec.search)]
    for section, d in sources:
        for k in d:
            if k not in known and k not in SPECIAL:
                close = [n for n in sorted(known) if n[:3] == k[:3]]
                hint = f"; did you mean {', '.join(close[:3])}?" if close else ""
                raise SpecError(f"{path}: {section}.{k}: unknown parameter (valid: arch, task, "
                                f"{', '.join(sorted(known))}){hint}")
    for k in spec.search:
        if k in SPECIAL:
            raise SpecError(f"{path}: search.{k}: {k} is a grid axis, not a searched parameter")
    for k, vals in spec.grid.items():
        if not vals:
            raise SpecError(f"{path}: grid.{k}: empty list")
    for k in set(spec.grid) & set(spec.fixed):
        raise SpecError(f"{path}: grid.{k}: also set in fixed; set it in one place")
    for k in set(spec.search) & (set(spec.grid) | set(spec.fixed)):
        raise SpecError(f"{path}: search.{k}: also set in grid or fixed; set it in one place")
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

    # Build every cell's configs with the low end of each search range, so a wrong type or a
    # window longer than the sequence fails here, before anything runs.
    probe = {k: (d.choices[0] if d.kind == "choice" else (int(d.low) if d.kind == "int" else d.low))
             for k, d in dists.items()}
    for cell in cells(spec):
        values = given_values(spec, cell, probe)
        try:
            r = resolve(values)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            section = next((s for s, d in sources if key in d), "fixed")
            raise SpecError(f"{path}: {section}.{key}: {err['msg']} (in cell {cell.label})") from None
        if r.train.window is not None and r.train.window > seq_len_of(r):
            section = "grid" if "window" in spec.grid else "fixed"
            raise SpecError(f"{path}: {section}.window: window {r.train.window} is larger than "
                            f"seq_len {seq_len_of(r)} (in cell {cell.label})")


def spec_fingerprint(text: str) -> str:
    """Stable identity of a spec's meaning (comments and formatting ignored)."""
    import hashlib
    import json
    return hashlib.sha256(json.dumps(yaml.safe_load(text), sort_keys=True, default=str).encode()).hexdigest()[:16]


def arrow_kind(annotation: Any) -> str:
    """'int' | 'float' | 'bool' | 'str' for a config field annotation (used for Parquet types)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return arrow_kind(args[0]) if args else "str"
    if get_origin(annotation) is Literal:
        return arrow_kind(type(get_args(annotation)[0]))
    return {int: "int", float: "float", bool: "bool"}.get(annotation, "str")

