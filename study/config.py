"""The study spec (search_spaces/*.yaml): loading, validation, cells, and one trial's flat config.

Keys are flat names shared by YAML, Parquet columns and plots (docs/design.md, "The study spec").
Every error is a `SpecError` whose message is one line naming the file and the key.
"""
from __future__ import annotations

import itertools
import math
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import study.models  # noqa: F401  (registers the archs)
import study.tasks  # noqa: F401  (registers the tasks)
from study.errors import SpecError, UsageError  # noqa: F401  (re-exported: `from study.config import UsageError`)
from study.registry import MODELS, TASKS
from study.trackers import Log


# Limits on what one spec may ask for: each is a one-line error, so a typo or a hostile file
# cannot make the loader read forever, expand YAML aliases exponentially or plan a million cells.
MAX_SPEC_BYTES = 1 << 20            # a spec is a page of YAML; /dev/zero is not
MAX_NODES = 20_000                  # YAML values after alias expansion (an "alias bomb" is ~10^9)
MAX_CELLS = 10_000
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
        if len(choices) > MAX_CHOICES:
            raise SpecError(f"{where}.choice: {len(choices)} values (at most {MAX_CHOICES})")
        bad = next((c for c in choices if not _scalar(c)), "ok")
        if bad != "ok":
            raise SpecError(f"{where}.choice: {short(bad)} is not a single number, string, bool or null")
        _no_duplicates(f"{where}.choice", choices)
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


# ---- loading and validation -----------------------------------------------------------------

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
        if len(vals) > MAX_CHOICES:
            raise SpecError(f"{path}: grid.{k}: {len(vals)} values (at most {MAX_CHOICES})")
        bad = next((v for v in vals if not _scalar(v)), "ok")
        if bad != "ok":
            raise SpecError(f"{path}: grid.{k}: {short(bad)} is not a single number, string, bool or null")
        # two equal values would be two cells with one label, sharing one Optuna study
        _no_duplicates(f"{path}: grid.{k}", [norm_window(v) if k == "window" else v for v in vals])
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

