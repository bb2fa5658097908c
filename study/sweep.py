"""Run a study: every grid cell in one Ray Tune experiment, one Optuna study per cell.

The only module that imports Optuna, and with study/loggers.py (the trackers' callbacks) the only
one that imports Ray. Why it is built this way (docs/design.md, "Decisions"):
`Tuner.restore` loses trials created after its last snapshot, reruns some finished ones and leaves
Optuna trials RUNNING forever. So memscale keeps its own ground truth instead:
- trial ids are deterministic, `<cell>-t<slot>-s<seed>`, so a rerun writes the same files;
- a trial checkpoints itself to `checkpoints/<trial_id>.pt` (model, optimiser, RNG, step and the
  rows it reported), so a retried or resumed trial continues and re-sends rows a dead driver lost;
- the `trials` Parquet table says which trials are finished; the Optuna journal holds each cell's
  search, and trials a dead driver left RUNNING are failed and their configurations asked again.
`study run` and `study resume` both start one Tune experiment over the trials not yet finished.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray import tune
from ray.tune import Callback, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

import study
from study.config import Budget, Cell, Dist, Spec, UsageError, cells, flat_params, given_values, resolve, searched
from study.grow import load_history
from study.identity import Wanted, optuna_name, study_cells
from study.journal import Journal
from study.locks import acquire_driver_lock, claim_machine
from study.loggers import callbacks as tracker_callbacks
from study.results import Compactor, ReportWriter, Store
from study.train import train

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAILED = ("diverged", "oom", "timeout", "error")


def trial_name(trial) -> str:
    """Ray's name and folder for a trial: memscale's trial id, so that Ray's folders and the
    trackers' runs (TensorBoard, MLflow, W&B) carry the same name as the Parquet rows."""
    return trial.config["trial_id"]


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(study.__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{study.__version__}+{rev}" if rev else study.__version__


def optuna_dist(d: Dist):
    if d.kind == "int":
        return IntDistribution(int(d.low), int(d.high), log=d.log)
    if d.kind == "float":
        return FloatDistribution(d.low, d.high, log=d.log)
    return CategoricalDistribution(list(d.choices))


def grid_values(d: Dist) -> list:
    """The points the `grid` sampler walks: every choice or integer; 5 points of a float range."""
    if d.kind == "choice":
        return list(d.choices)
    if d.kind == "int":
        return list(range(int(d.low), int(d.high) + 1))
    import numpy as np
    pts = np.geomspace(d.low, d.high, 5) if d.log else np.linspace(d.low, d.high, 5)
    return [float(p) for p in pts]


def make_sampler(spec: Spec, dists: dict[str, Dist], seed: int):
    name = spec.sampler or ("nsga2" if len(spec.objectives) > 1 else "tpe")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler({k: grid_values(d) for k, d in dists.items()}, seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def objective_values(spec: Spec, rows: list[dict]) -> list[float] | None:
    vals = []
    for o in spec.objectives:
        xs = [r.get(o.metric) for r in rows]
        if any(x is None for x in xs):
            return None
        vals.append(sum(float(x) for x in xs) / len(xs))   # mean over seeds
    return vals


@dataclass
class Slot:
    cell: Cell
    index: int
    number: int | None = None          # the Optuna trial number, once asked
    params: dict | None = None
    told: bool = False
    issued: bool = False               # queued or running in this driver
    rows: dict[str, dict] = field(default_factory=dict)   # finished seeds: trial_id -> trials row


class CellSearcher(Searcher):
    """One Ray Tune searcher over all cells; inside each cell an Optuna study asked and told by
    hand. Slots are issued round-robin over cells so every cell makes progress together."""

    def __init__(self, spec: Spec, store: Store, finished: dict[str, dict]):
        super().__init__()
        self.spec, self.store = spec, store
        self.dists = searched(spec)
        self.odists = {k: optuna_dist(d) for k, d in self.dists.items()}
        self.journal = Journal(store)
        storage = JournalStorage(JournalFileBackend(self.journal.path))
        directions = ["maximize" if o.mode == "max" else "minimize" for o in spec.objectives]
        self.studies, self.slots, self.queue, self.live = {}, [], [], {}
        self.by_trial: dict[str, Slot] = {}
        self.cursor = 0            # suggest: slots before it are issued or finished
        self.max_memory = 0.0      # the largest node's `memory` resource, set once Ray is up
        history = load_history(store)
        self.version = history.version if history.recorded else None   # recorded in each trials row
        # content-addressed cells (study/identity.py); a study from before keeps its positional ids
        grid = study_cells(spec, history.legacy)
        self.wanted = Wanted(spec.budget, finished)    # which trial each (cell, slot, seed) needs now
        for c in grid:
            st = optuna.create_study(study_name=optuna_name(c, history.legacy), storage=storage,
                                     directions=directions, load_if_exists=True)
            # Seeded per cell and per resume: a sampler seeded the same way in every driver would
            # replay its first random suggestions after a resume.
            st.sampler = make_sampler(spec, self.dists, seed=c.index * 100_003 + len(st.trials))
            self.studies[c.index] = st
        for k in range(spec.trials_per_cell):
            for c in grid:
                slot = Slot(c, k)
                self.slots.append(slot)
                for s in spec.seeds:
                    tid, _ = self.wanted.want(c.id, k, s)
                    self.by_trial[tid] = slot
                    if tid in finished:
                        slot.rows[tid] = finished[tid]
        self._recover()

    def _recover(self) -> None:
        """Reconcile the Optuna journal with the trials table after any earlier driver: a slot's
        latest Optuna trial gives its configuration; one left RUNNING by a dead driver is failed
        and its configuration asked again; a slot already told is never told twice."""
        by_key = {(s.cell.index, s.index): s for s in self.slots}
        for ci, st in self.studies.items():
            for t in st.get_trials(deepcopy=False):          # in order: the latest trial wins
                slot = by_key.get((ci, t.user_attrs.get("slot")))
                if slot is None:
                    continue
                if t.state in (TrialState.RUNNING, TrialState.WAITING):
                    st.tell(t.number, state=TrialState.FAIL)
                finished_seeds = len(slot.rows) == len(self.spec.seeds)
                told = t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                    t.state == TrialState.FAIL and finished_seeds)
                slot.params, slot.told = dict(t.params), told
                slot.number = t.number if told else None

    def total(self) -> int:
        return len(self.by_trial)

    def remaining(self) -> int:
        return sum(len(self.spec.seeds) - len(s.rows) for s in self.slots)

    def cells_done(self) -> int:
        unfinished = {s.cell.index for s in self.slots if len(s.rows) < len(self.spec.seeds)}
        return len(self.studies) - len(unfinished)

    def _ask(self, slot: Slot) -> None:
        st = self.studies[slot.cell.index]
        if slot.params is not None:   # a configuration re-asked after a crash keeps its values
            st.enqueue_trial(slot.params, skip_if_exists=False)
        t = st.ask(self.odists)
        t.set_user_attr("slot", slot.index)
        slot.number, slot.params = t.number, dict(t.params)

    def suggest(self, trial_id: str):
        if not self.queue:
            # slots before the cursor are issued or finished for good: each suggest scans on from
            # there (scanning from the first slot every time is O(N^2) over a study)
            while self.cursor < len(self.slots):
                slot = self.slots[self.cursor]
                todo = [s for s in self.spec.seeds if self.wanted.want(slot.cell.id, slot.index, s)[0] not in slot.rows]
                if todo and not slot.issued:
                    if slot.number is None:
                        self._ask(slot)
                    slot.issued = True
                    self.queue.extend((slot, s) for s in todo)   # every seed shares the configuration
                    break
                self.cursor += 1
        if not self.queue:
            return Searcher.FINISHED
        slot, seed = self.queue.pop(0)
        tid, source = self.wanted.want(slot.cell.id, slot.index, seed)
        self.live[trial_id] = tid
        values = {**given_values(self.spec, slot.cell, slot.params), "seed": seed}
        need = self.spec.resources.for_arch(values["arch"])
        return {"study": self.spec.study, "study_dir": self.store.uri, "trial_id": tid,
                "cell": slot.cell.label, "values": values, "budget": self.spec.budget.model_dump(),
                "cpus": need.cpu, "gpus": need.gpu, "memory": memory_request(values, self.max_memory),
                "continue_from": source, "spec_version": self.version}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        tid = self.live.pop(trial_id, None)      # Ray's trial id -> memscale's
        if tid is None:
            return
        slot = self.by_trial[tid]
        status = "error" if error or not result else result.get("status", "error")
        if status == "running":
            status = "pruned"
        slot.rows[tid] = {**(result or {}), "status": status}
        if len(slot.rows) < len(self.spec.seeds) or slot.told or slot.number is None:
            return
        self.tell(slot)

    def tell(self, slot: Slot) -> None:
        st = self.studies[slot.cell.index]
        statuses = {r["status"] for r in slot.rows.values()}
        values = objective_values(self.spec, list(slot.rows.values()))
        if statuses == {"completed"} and values is not None:
            st.tell(slot.number, values)
        elif "pruned" in statuses:
            st.tell(slot.number, state=TrialState.PRUNED)
        else:
            st.tell(slot.number, state=TrialState.FAIL)
        slot.told = True
        self.journal.push()

    def __reduce__(self):
        # Tune pickles its search algorithm (into tuner.pkl, for a Tuner.restore memscale never
        # calls). Live Optuna objects do not pickle: optuna 5.1's NSGA-II sampler holds a
        # threading.Lock, the journal backend a file lock. Pickle what defines the searcher and
        # rebuild the rest from the trials table and the journal, exactly as `study resume` does.
        return (_rebuild_searcher, (self.spec, self.store.uri))

    def save(self, checkpoint_path: str) -> None:
        # Nothing to snapshot: the state is rebuilt from the trials table and the Optuna journal.
        Path(checkpoint_path).write_text("{}")

    def restore(self, checkpoint_path: str) -> None:
        pass


def searcher_rows(spec: Spec, store: Store) -> dict[str, dict]:
    """The finished trials, with only the columns the searcher reads: turning all of `trials`' ~75
    columns into Python dicts is most of a resume's start-up at 100k trials."""
    cols = ["trial_id", "status", "steps", "train_flops", *dict.fromkeys(o.metric for o in spec.objectives)]
    return {r["trial_id"]: r for r in store.trial_rows(columns=cols)}


def _rebuild_searcher(spec: Spec, uri: str) -> CellSearcher:
    store = Store(uri)
    return CellSearcher(spec, store, searcher_rows(spec, store))
def memory_request(values: dict, most: float) -> int:
    """Bytes of Ray's `memory` resource for a trial: its estimated need (study.memory_budget), so
    Ray packs trials by memory as well as CPUs. 0 when it exceeds the largest node: the trial then
    records `oom` itself instead of waiting forever for a node that fits."""
    from study.config import seq_len_of
    from study.memory_budget import estimate_bytes
    from study.tasks import build_task
    try:
        r = resolve(values)
        need = estimate_bytes(r, build_task(r.task, r.task_cfg).io, seq_len_of(r))
    except Exception:                                  # noqa: BLE001 - the trial reports its own error
        return 0
    return int(need) if need <= most else 0


def trial_fn(config: dict) -> None:
    """A Ray Tune function trainable: one trial, continuing from its own checkpoint if it has one."""
    torch.set_num_threads(max(1, int(config["cpus"])))   # no oversubscription: the CPUs it was given
    store, tid = Store(config["study_dir"]), config["trial_id"]
    blob = store.read_bytes("checkpoints", f"{tid}.pt")
    try:
        resume = torch.load(io.BytesIO(blob), weights_only=False) if blob else None
    except Exception:                                  # noqa: BLE001 - torn by a kill or a full disk:
        store.quarantine(store.join("checkpoints", f"{tid}.pt"))   # start this trial from scratch
        resume = None
    resumed_from = resume["progress"]["step"] if resume else None   # provenance: continued, not restarted
    if resume is None and config.get("continue_from"):
        resume = continuation(store, config["continue_from"])
    continued = resume.get("continued_from_steps") if resume else None
    history: list = list(resume["history"]) if resume else []
    replay: list = list(history)          # rows a dead driver may not have written: sent again
    node = ray.get_runtime_context().get_node_id()

    def send(metrics: dict, curve: list) -> None:
        nonlocal replay
        result = {**metrics, "lag_curve": curve}
        if replay:
            result["replay"], replay = replay, []
        tune.report(result)

    if resume and resume.get("final"):
        metrics, curve = history[-1]
        replay = history[:-1]
        send(metrics, curve)
        return

    def report(metrics: dict, curve: list, ckpt: dict | None) -> None:
        metrics = {**metrics, "node": node, "resumed_from_step": resumed_from,
                   "continued_from_steps": continued, "spec_version": config.get("spec_version")}
        history.append((metrics, curve))
        if ckpt is not None:
            buf = io.BytesIO()
            torch.save({**ckpt, "history": history, "final": metrics["status"] != "running", "node": node,
                        "continued_from_steps": continued}, buf)
            store.write_bytes(buf.getvalue(), "checkpoints", f"{tid}.pt")
        send(metrics, curve)

    train(config["values"], Budget(**config["budget"]), report, resume)


def continuation(store: Store, source: str) -> dict | None:
    """A trial continued to a larger budget.steps starts from the final checkpoint of its run at
    the shorter budget (study/identity.py): the model, optimiser, RNG states and progress go on;
    that run's rows stay its own (not re-sent under the new id), and its files are not touched.
    Without a readable checkpoint the trial trains from scratch (and records no continuation)."""
    blob = store.read_bytes("checkpoints", f"{source}.pt")
    try:
        ckpt = torch.load(io.BytesIO(blob), weights_only=False) if blob else None
    except Exception:                                  # noqa: BLE001 - unreadable: train from scratch
        ckpt = None
    if ckpt is None:
        print(f"warning: no readable checkpoint of {source}; its continuation trains from step 0", file=sys.stderr)
        return None
    return {**ckpt, "history": [], "final": False, "continued_from_steps": ckpt["progress"]["step"]}


def error_line(trial) -> str:
    try:
        text = str(trial.get_pickled_error() or "") or Path(trial.error_file).read_text()
    except Exception:                                  # noqa: BLE001 - best effort for a message
        text = "trial failed"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "trial failed")[:1000]


def killed_for_memory(trial, line: str) -> bool:
    try:
        text = str(trial.get_pickled_error() or "")
    except Exception:                                  # noqa: BLE001 - best effort
        text = ""
    text = (text + " " + line).lower()
    return any(w in text for w in ("outofmemoryerror", "out of memory", "memory monitor", "running low on memory"))


class ResultsCallback(Callback):
    """Writes the Parquet tables from the driver, and prints progress."""

    def __init__(self, spec: Spec, store: Store, searcher: CellSearcher, version: str):
        self.spec, self.store, self.searcher, self.version = spec, store, searcher, version
        self.t0 = time.time()
        self.best: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.compactor = Compactor(store)
        # progress counters, kept up to date per finished trial: O(1) each, where recounting the
        # searcher's slots was O(slots) per trial and O(N^2) over a study
        self.done = searcher.total() - searcher.remaining()
        self.left: dict[str, int] = {}           # cell label -> trials not finished yet
        for slot in searcher.slots:
            n = len(searcher.spec.seeds) - len(slot.rows)
            self.left[slot.cell.label] = self.left.get(slot.cell.label, 0) + n
        self.cells_done = sum(n == 0 for n in self.left.values())
        self.top: tuple[Any, str] | None = None  # the best memory length so far, and its cell
        self.finished: set[str] = set()
        self.printed = 0.0
        self.writer = ReportWriter(store, spec.study)

    def _trial_row(self, trial, result: dict, status: str, error: str | None) -> dict:
        cfg = trial.config
        values = cfg["values"]
        r = resolve(values)
        return {**flat_params(r), **result, "study": self.spec.study, "trial_id": cfg["trial_id"],
                "cell": cfg["cell"], "arch": r.arch, "task": r.task, "seed": values.get("seed", 0),
                "status": status, "error": error, "code_version": self.version}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # buffered, a batch per trial (ReportWriter: exactly once, and thousands of results/s)
        self.writer.report(trial.config["trial_id"], result, result["lag_curve"], result.get("replay", []))
        self.writer.flush_due()

    def on_step_end(self, iteration, trials, **info):
        self.writer.flush_due()

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = dict(trial.last_result or {})
        status = result.get("status", "error")
        if status == "running":     # stopped by the scheduler before its budget ran out
            status = "pruned"
        self._finish(trial, result, status, result.get("error"))

    def on_trial_error(self, iteration, trials, trial, **info):
        result = dict(trial.last_result or {})
        line = error_line(trial)
        # Ray's memory monitor killed the worker (after the retries max_failures allows): the trial
        # did not fit next to whatever else ran, which is a result, like an allocation that fails
        status = "oom" if killed_for_memory(trial, line) else "error"
        self._finish(trial, result, status, line)

    def _finish(self, trial, result: dict, status: str, error: str | None) -> None:
        row = self._trial_row(trial, result, status, error)
        self.writer.finish(row["trial_id"])    # before the trials row: a finished trial's files never change again
        self.store.write_trial(row)
        self.compactor.trial_finished()
        self.counts[status] = self.counts.get(status, 0) + 1
        key = row["cell"]
        if row.get("memory_length") is not None:
            self.best[key] = max(self.best.get(key, 0), row["memory_length"])
            if self.top is None or row["memory_length"] > self.top[0]:
                self.top = (row["memory_length"], key)
        if row["trial_id"] not in self.finished:
            self.finished.add(row["trial_id"])
            self.done += 1
            if key in self.left:
                self.left[key] -= 1
                self.cells_done += self.left[key] == 0
        self.progress()

    PROGRESS_EVERY_S = 5.0      # a study of 100k short trials would otherwise print 100k lines

    def progress(self) -> None:
        s = self.searcher
        now = time.time()
        if self.done < s.total() and now - self.printed < self.PROGRESS_EVERY_S:
            return
        self.printed = now
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        best_s = f" | best L* {self.top[0]} ({self.top[1]})" if self.top else ""
        print(f"[{self.spec.study}] {now - self.t0:6.0f}s  cells done {self.cells_done}/{len(s.studies)}, "
              f"trials finished {self.done}/{s.total()} "
              f"({counts}) | running {len(s.live)}{best_s}", flush=True)


def check_storage(store: Store) -> None:
    """Trials on several machines must write to storage every one of them reaches."""
    hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    if len(hosts) > 1 and "://" not in store.uri:
        raise UsageError(f"{store.uri}: a local path on a {len(hosts)}-machine cluster; give --results a "
                         "URI every node reaches (s3://bucket/prefix, gs://..., or file:///path on a "
                         "shared filesystem mounted on every node)")


def check_resources(spec: Spec, joined: bool) -> float:
    """Every arch's request must fit on some node: Ray would otherwise leave the trial pending
    forever, silently. Returns the largest node's `memory` resource (bytes)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in ("CPU", "GPU", "memory")}
    for arch in sorted({given_values(spec, c)["arch"] for c in cells(spec)}):
        need = spec.resources.for_arch(arch)
        if need.cpu <= most["CPU"] and need.gpu <= most["GPU"]:
            continue
        msg = (f"{arch} trials ask for {need.cpu:g} CPU and {need.gpu:g} GPU; the largest node of this Ray "
               f"cluster has {most['CPU']:g} CPU and {most['GPU']:g} GPU")
        if not joined:
            raise UsageError(f"{msg} (set resources in the spec)")
        print(f"waiting: {msg}; an autoscaler may add a node that fits", file=sys.stderr, flush=True)
    return most["memory"]


# Tune lets a custom searcher have one trial waiting for resources at a time (its "auto" for
# TUNE_MAX_PENDING_TRIALS_PG is 1 for anything but its own variant generator), so each trial was
# created only once the one before it had started: one-second trials ran one after another on a
# machine with room for several. A user's own setting wins.
_USER_PENDING = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG")


def pending_limit(spec: Spec) -> int:
    """How many trials may wait for resources at once: as many as the cluster could run at once
    (its CPUs over the smallest CPU request; GPUs likewise), capped by max_concurrent."""
    have = ray.cluster_resources()
    n = 1
    for arch in {given_values(spec, c)["arch"] for c in cells(spec)}:
        need = spec.resources.for_arch(arch)
        fits = [have.get(k, 0.0) / x for k, x in (("CPU", need.cpu), ("GPU", need.gpu)) if x > 0]
        n = max(n, int(min(fits)) if fits else 1)
    return min(n, spec.max_concurrent) if spec.max_concurrent else n


# Tune's run() counts the callbacks it is given by type (ray.air._internal.usage.tag_callbacks),
# importing its comet, mlflow, wandb and aim integrations to do so, and so mlflow itself: 2.0 s
# of the driver's time between Tuner.fit and the first trial (cProfile, 2-core machine). Imported
# in a thread while ray.init waits for Ray's processes, it costs the first trial nothing.
TUNE_USAGE_IMPORTS = ("ray.air.integrations.comet", "ray.air.integrations.mlflow",
                      "ray.air.integrations.wandb", "ray.tune.logger.aim")


def _import_early() -> threading.Thread:
    def work() -> None:
        import importlib
        for name in TUNE_USAGE_IMPORTS:
            try:
                importlib.import_module(name)
            except Exception:       # noqa: BLE001 - only a head start: Tune imports them itself
                pass
    t = threading.Thread(target=work, name="memscale-early-imports", daemon=True)
    t.start()
    return t


def run_study(spec: Spec, store: Store, address: str | None = None) -> int:
    """Run (or continue) every trial of the study that has no row in `trials` yet."""
    acquire_driver_lock(store)
    try:
        return _run(spec, store, address)
    finally:
        store.delete("driver.json")


def _run(spec: Spec, store: Store, address: str | None) -> int:
    searcher = CellSearcher(spec, store, searcher_rows(spec, store))
    todo = searcher.remaining()
    print(f"[{spec.study}] {len(cells(spec))} cells, {searcher.total()} trials, {todo} to run", flush=True)
    if todo == 0:
        return 0
    # memscale writes its own tables; Ray's CSV/JSON/TensorBoard loggers would choke on lag curves
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trials keep the driver's working directory, so relative paths in a spec (a text corpus)
    # mean what the user meant; Tune would otherwise move each trial into its own folder.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    early = _import_early()
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": "ERROR",
                 "runtime_env": {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}}
        if address:                  # joining a cluster: its dashboard is its own business
            ray.init(address=address, **quiet)
        else:
            claim_machine(store)
            ray.init(include_dashboard=False, **quiet)
    check_storage(store)
    searcher.max_memory = check_resources(spec, joined=bool(address))
    scheduler = None
    if spec.scheduler and spec.scheduler.asha:
        o = spec.objectives[0]
        a = spec.scheduler.asha
        scheduler = ASHAScheduler(metric=o.metric, mode=o.mode, time_attr="iteration",
                                  max_t=max(1, spec.budget.steps // spec.budget.eval_every),
                                  grace_period=a.grace_period, reduction_factor=a.reduction_factor)
    callback = ResultsCallback(spec, store, searcher, code_version())
    storage = store.path if store.local else store.uri
    if _USER_PENDING is None:
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(pending_limit(spec))
    early.join()
    tuner = Tuner(
        tune.with_resources(trial_fn, lambda cfg: {"cpu": cfg["cpus"], "gpu": cfg["gpus"],
                                                   "memory": cfg.get("memory", 0)}),
        tune_config=TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=todo,
                               max_concurrent_trials=spec.max_concurrent, reuse_actors=True,
                               trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=RunConfig(name=f"ray/run-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=spec.max_failures),
                             callbacks=[callback, *tracker_callbacks(spec, store)], verbose=0),
    )
    tuner.fit()
    searcher.journal.push(final=True)
    callback.writer.close()
    callback.compactor.close()
    left = searcher.remaining()
    print(f"[{spec.study}] done in {time.time() - callback.t0:.0f}s; {searcher.total() - left} of "
          f"{searcher.total()} trials finished", flush=True)
    if left:
        # Tune catches Ctrl-C itself and returns; say why the run stopped and how to go on
        print(f"study: stopped with {left} trials unfinished (interrupted, or Ray could not run them); "
              f"continue with `study resume {store.uri}`", file=sys.stderr)
    return 0 if left == 0 else 1

