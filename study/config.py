"""The study spec (search_spaces/*.yaml): its data model, cells, and one trial's flat config.

Keys are flat names shared by YAML, Parquet columns and plots (docs/design.md, "The study spec").
Every error is a `SpecError` whose message is one line naming the file and the key. Reading a
spec file and checking it before a study runs is study/validate.py's job.
"""
from __future__ import annotations

import itertools
import math
import re
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

import study.models  # noqa: F401  (registers the archs)
import study.tasks  # noqa: F401  (registers the tasks)
from study.errors import SpecError, UsageError  # noqa: F401  (re-exported: `from study.config import UsageError`)
from study.registry import MODELS, TASKS
from study.trackers import Log


# Limits on what one spec may ask for, each a one-line error; those on the file, its YAML and the
# grid are in study/validate.py.
MAX_TRIALS = 100_000                # cells x trials_per_cell x seeds
MAX_CHOICES = 1_000                 # values in one grid axis or search choice
STUDY_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")   # a folder name, never "." or ".."


# strict: `lr: true` is not 1.0 and `steps: 1.5` is not 1; no inf or nan anywhere in a spec
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TrainConfig(BaseModel):
    """Training and evaluation parameters of one trial (any may be fixed, gridded or searched)."""
    model_config = STRICT

    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    window: int | None = Field(None, ge=1)      # TBPTT chunk / attention span / KV budget; None = full
    seq_len: int | None = Field(None, ge=2)     # None: what the task needs for its lag
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)  # global-norm clip, as the seed papers' code clips; None: off (indrnn: step_grad_clip)
    tau: float = Field(0.9, gt=0, le=1)         # memory-length threshold on the normalised score
    max_lag: int | None = Field(None, ge=1)     # top of the evaluation ladder; None = 4 x lag
    eval_batch: int = Field(64, ge=1)           # sequences per ladder lag
    max_eval_s: float | None = Field(None, gt=0)  # evaluation time cap per evaluation


class Budget(BaseModel):
    model_config = STRICT
    steps: int = Field(1000, ge=1)
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(1, ge=1)      # in evaluations
    max_wall_s: float | None = Field(None, gt=0)
    max_flops: float | None = Field(None, gt=0)


class Objective(BaseModel):
    model_config = STRICT
    metric: Literal["memory_length", "train_flops", "final_loss", "wall_s", "params", "state_size"] = "memory_length"
    mode: Literal["max", "min"] = "max"


class Request(BaseModel):
    model_config = STRICT
    # Ray counts resources in units of 1e-4; below 0.01 CPU a trial never gets time anyway
    cpu: float = Field(1, ge=0.01, le=10_000)
    gpu: float = Field(0, ge=0, le=1_000)   # fractional: 0.25 packs four small trials on one GPU

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("more than one GPU must be a whole number (Ray's rule)")
        if 0 < v < 0.01:
            raise ValueError("a GPU share must be 0 or at least 0.01")
        return v


class Resources(Request):
    # e.g. {transformer: {cpu: 1, gpu: 1}}: attention at long seq_len gets a whole GPU while small
    # recurrent trials share one
    per_arch: dict[str, Request] = {}

    def for_arch(self, arch: str) -> Request:
        return self.per_arch.get(arch, Request(cpu=self.cpu, gpu=self.gpu))


class Asha(BaseModel):
    model_config = STRICT
    grace_period: int = Field(1, ge=1)          # in evaluations
    reduction_factor: float = Field(2, gt=1)


class Scheduler(BaseModel):
    model_config = STRICT
    asha: Asha | None = None


class Spec(BaseModel):
    model_config = STRICT
    study: str
    task: Union[str, dict[str, Any], None] = None
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    search: dict[str, dict[str, Any]] = {}
    trials_per_cell: int = Field(1, ge=1, le=MAX_TRIALS)
    objective: Union[Objective, list[Objective]] = Objective()
    budget: Budget = Budget()
    scheduler: Scheduler | None = None
    sampler: Literal["tpe", "nsga2", "random", "grid"] | None = None   # None: tpe, nsga2 if multi-objective
    resources: Resources = Resources()
    seeds: list[int] = Field([0], min_length=1, max_length=MAX_CHOICES)
    max_failures: int = Field(2, ge=0, le=100)
    max_concurrent: int | None = Field(None, ge=1)
    log: Log | None = None          # trackers that also receive the curves (study/trackers.py)

    @field_validator("study")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not STUDY_NAME.match(v):
            raise ValueError("a study name is 1-100 letters, digits, '_', '-' or '.', not starting with '.' "
                             "(it names the results folder)")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        for s in v:
            if not 0 <= s < 2**31:
                raise ValueError(f"seed {s} is outside 0 .. 2^31-1")
        dup = next((s for i, s in enumerate(v) if s in v[:i]), None)
        if dup is not None:
            raise ValueError(f"seed {dup} is listed twice (each seed is one trial of a configuration)")
        return v

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
    step: int = 1                     # int ranges: sample low, low + step, ..., high

    def points(self, most: int = 64) -> list:
        """Values that stand for everything this distribution can sample, for validation: every
        choice; every integer of a short range, else its first and last most/2 values (a
        divisibility rule fails within the first few); both ends of a float range."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "float":
            return [self.low, self.high]
        lo, hi, k = int(self.low), int(self.high), self.step
        n = (hi - lo) // k + 1
        if n <= most:
            return list(range(lo, hi + 1, k))
        half = most // 2
        return [lo + i * k for i in range(half)] + [lo + (n - half + i) * k for i in range(half)]


def short(v: Any, n: int = 60) -> str:
    """repr for an error line, cut to n characters (a value may be an expanded YAML alias)."""
    text = repr(v)
    return text if len(text) <= n else text[:n - 3] + "..."


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))


def parse_dist(where: str, raw: Any) -> Dist:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping like {{float: [1e-4, 1e-2], log: true}}")
    kinds = [k for k in ("int", "float", "choice") if k in raw]
    extra = set(raw) - {"int", "float", "choice", "log", "step"}
    if extra:
        raise SpecError(f"{where}: unknown key {sorted(map(str, extra))[0]!r} (valid: int, float, choice, log, step)")
    if len(kinds) != 1:
        raise SpecError(f"{where}: give exactly one of int, float, choice")
    kind = kinds[0]
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{where}.log: expected true or false")
    if "step" in raw and kind != "int":
        raise SpecError(f"{where}.step: only an int range takes a step")
    if kind == "choice":
        choices = raw["choice"]
        if log:
            raise SpecError(f"{where}.log: a choice has no log scale")
        if not isinstance(choices, list) or not choices:
            raise SpecError(f"{where}.choice: expected a non-empty list")
        check_choices(f"{where}.choice", choices)
        return Dist("choice", choices=tuple(choices))
    rng = raw[kind]
    if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)):
        raise SpecError(f"{where}.{kind}: expected [low, high]")
    if not all(math.isfinite(v) for v in rng):
        raise SpecError(f"{where}.{kind}: bounds must be finite numbers")
    low, high = rng
    if kind == "int" and not all(float(v).is_integer() for v in rng):
        raise SpecError(f"{where}.int: bounds must be whole numbers")
    if kind == "int" and max(abs(low), abs(high)) > 2**53:
        raise SpecError(f"{where}.int: bounds must be within +-2^53")
    if low >= high:
        raise SpecError(f"{where}.{kind}: range is the wrong way round ({low} >= {high})")
    if log and low <= 0:
        raise SpecError(f"{where}.{kind}: a log range needs low > 0")
    step = raw.get("step", 1)
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise SpecError(f"{where}.step: expected a whole number >= 1")
    if step > 1 and log:     # Optuna samples either on a log scale or on a step grid, not both
        raise SpecError(f"{where}.step: a log range cannot take a step; list the values with choice: [...]")
    if (int(high) - int(low)) % step:
        raise SpecError(f"{where}.step: high - low ({int(high) - int(low)}) is not a multiple of step {step}")
    if kind == "int":
        low, high = int(low), int(high)
    return Dist(kind, low=low, high=high, log=log, step=step)


def check_choices(where: str, values: list, keys: list | None = None) -> None:
    """The values a grid axis or a search choice takes: at most MAX_CHOICES, each a scalar,
    none twice (compared by `keys` when given: normalised forms of the values)."""
    if len(values) > MAX_CHOICES:
        raise SpecError(f"{where}: {len(values)} values (at most {MAX_CHOICES})")
    bad = next((v for v in values if not _scalar(v)), "ok")
    if bad != "ok":
        raise SpecError(f"{where}: {short(bad)} is not a single number, string, bool or null")
    _no_duplicates(where, values if keys is None else keys)


def _no_duplicates(where: str, values: list) -> None:
    seen: list = []
    for v in values:
        # 1 and 1.0 and true are one value to Python (and to Optuna): compare by type and value
        key = (type(v).__name__, v)
        if key in seen:
            raise SpecError(f"{where}: {short(v)} is listed twice")
        seen.append(key)


# ---- cells ----------------------------------------------------------------------------------

def fmt(v: Any) -> str:
    return "full" if v is None else str(v)


@dataclass(frozen=True)
class Cell:
    index: int
    values: tuple[tuple[str, Any], ...]     # the grid values of this cell, in grid order
    name: str = ""                          # its content-addressed id (study/identity.py)

    @property
    def id(self) -> str:
        return self.name or f"c{self.index:03d}"

    @property
    def label(self) -> str:
        """Human-readable and stable: also the Optuna study name of the cell."""
        return ",".join(f"{k}={fmt(v)}" for k, v in self.values) or "all"


def norm_window(v: Any) -> Any:
    return None if v == "full" else v


def cells(spec: Spec) -> list[Cell]:
    """Every grid point, named by what defines its trials (study/identity.py), not its position."""
    from study.identity import name_cells
    return name_cells(spec, positional_cells(spec))


def positional_cells(spec: Spec) -> list[Cell]:
    """The grid points in grid order, named by position (c000, c001, ...: ids before content addressing)."""
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
    # strict everywhere: a YAML `true` is not 1, "16" is not 16 (the families' configs are lax)
    model = MODELS.get(arch).config.model_validate({k: v for k, v in params.items() if k in mf}, strict=True)
    task_cfg = TASKS.get(task).config.model_validate({k: v for k, v in params.items() if k in tf}, strict=True)
    train = TrainConfig.model_validate({k: v for k, v in params.items() if k in rf})
    unused = tuple(k for k in params if k not in mf and k not in tf and k not in rf)
    return Resolved(arch, task, model, task_cfg, train, unused)


def seq_len_of(r: Resolved) -> int:
    return r.train.seq_len or TASKS.get(r.task).cls(r.task_cfg).default_seq_len()


def flat_params(r: Resolved) -> dict[str, Any]:
    """The effective value of every parameter this trial uses (defaults included): its Parquet row."""
    out = {**r.train.model_dump(), **r.task_cfg.model_dump(), **r.model.model_dump()}
    out["seq_len"] = seq_len_of(r)
    return out


# ---- the spec's YAML ------------------------------------------------------------------------

class SpecLoader(yaml.SafeLoader):
    """yaml.safe_load (no code tags) that also refuses a key given twice, where plain YAML keeps
    the last one silently, and reads 1e-3 as a number as YAML 1.2 does (1.1 wants 1.0e-3)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: list = []
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                            key_node.start_mark)
                seen.append(key)
        return super().construct_mapping(node, deep)


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=SpecLoader)   # noqa: S506 - SpecLoader is a SafeLoader



def spec_fingerprint(text: str) -> str:
    """Stable identity of a spec's meaning (comments and formatting ignored)."""
    import hashlib
    import json
    return hashlib.sha256(json.dumps(yaml_load(text), sort_keys=True, default=str).encode()).hexdigest()[:16]


def arrow_kind(annotation: Any) -> str:
    """'int' | 'float' | 'bool' | 'str' for a config field annotation (used for Parquet types)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return arrow_kind(args[0]) if args else "str"
    if get_origin(annotation) is Literal:
        return arrow_kind(type(get_args(annotation)[0]))
    return {int: "int", float: "float", bool: "bool"}.get(annotation, "str")

