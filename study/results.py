"""The Parquet tables (docs/design.md, "Results"): schema, atomic idempotent writes, compaction.

While a trial runs, its rows are in files of its own: `trials/<trial_id>.parquet`,
`metrics/<trial_id>/<a>-<b>.parquet`, `lag_curves/<trial_id>/<a>-<b>.parquet` (evaluations a..b,
a batch of the driver's ReportWriter; `<a>.parquet` for one). A trial that restarts replaces its
folders with its re-sent history, so a replayed or recomputed report can never duplicate a row:
exactly once by construction (ReportWriter). Files are written to a hidden temporary name that no
reader's glob matches, then renamed.

A finished trial never changes again, so finished trials are compacted, a batch at a time, into
segment files (`trials/segment-*.parquet`, `<table>/segments/segment-*.parquet`) and their
per-trial files deleted: readers then pay per segment, not per evaluation. A trial's rows are in a
segment or in its own files; a crash between writing a segment and deleting the files it replaced
leaves both, and every reader here skips the per-trial files of a trial the segment holds, and the
next compaction deletes them (idempotent by trial, hence by (trial_id, iteration)).
"""
from __future__ import annotations

import io
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.config import arrow_kind, known_params

TABLES = ("trials", "metrics", "lag_curves")
SEGMENT = "segment-"          # segment files' name prefix; never a trial id (those are <cell>-t<slot>-s<seed>)
SEGMENTS_DIR = "segments"     # metrics/ and lag_curves/ keep their segments in this folder
# Finished trials left in per-trial files before a batch is compacted during a run. Bounds the
# per-file cost every reader pays (this many trials x evaluations x 2 files at most), while each
# segment stays big enough that a 100,000-trial study has a few hundred of them per table.
COMPACT_BATCH = 256
READ_THREADS = 16             # per-trial files are read in parallel: on S3 each is a GET
ARROW = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}

TRIAL_COLUMNS = {
    "study": "str", "trial_id": "str", "cell": "str", "arch": "str", "task": "str", "seed": "int",
    "params": "int", "state_size": "int", "flops_per_token": "float", "train_flops": "float",
    "tokens": "int", "steps": "int", "wall_s": "float", "peak_mem_bytes": "int", "device": "str",
    "dtype": "str", "status": "str", "error": "str", "memory_length": "int", "tau": "float",
    # censored: memory_length is only a lower bound (no evaluated lag above it failed); reach: how
    # far back (steps) the training signal or attention can see, null = unbounded
    "censored": "bool", "reach": "int",
    "solved": "bool", "final_loss": "float", "eval_loss": "float", "started_at": "timestamp",
    "ended_at": "timestamp", "host": "str", "node": "str", "resumed_from_step": "int",
    "code_version": "str", "torch_version": "str",
    # one training step's peak live tensor bytes (study/peak.py): what the architecture costs;
    # peak_mem_bytes is the process's resident peak, what the machine paid
    "peak_tensor_bytes": "int",
    # the spec version (specs/<n>.yaml) the trial finished under, null in studies from before spec
    # history; continued_from_steps: the shorter budget.steps this trial was continued from
    # (study/identity.py: its row at that budget is the trial id without -b<steps>)
    "spec_version": "int", "continued_from_steps": "int",
}
METRIC_COLUMNS = {
    "study": "str", "trial_id": "str", "iteration": "int", "step": "int", "tokens": "int",
    "train_flops": "float", "wall_s": "float", "train_loss": "float", "eval_loss": "float",
    "memory_length": "int", "lr": "float", "node": "str",   # node: where this evaluation ran
}
CURVE_COLUMNS = {
    "study": "str", "trial_id": "str", "iteration": "int", "step": "int", "lag": "int", "score": "float",
    "distance": "int",     # the dependency distance scored at this ladder lag (L*'s unit)
    "score_lo": "float", "score_hi": "float", "metric": "str", "n": "int", "feasible": "bool",
    "reason": "str", "loss": "float",
    # text: the loss drop from the previous context length, with its paired-bootstrap interval
    "gain": "float", "gain_lo": "float", "gain_hi": "float",
}


def make_trial_id(cell, slot: int, seed: int) -> str:
    """`<cell>-t<slot>-s<seed>`: deterministic, so a rerun of a trial writes the same files
    (study/identity.py: the cell id is content-addressed; a continuation adds `-b<steps>`)."""
    return f"{cell.id}-t{slot:03d}-s{seed}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _field(name: str, kind: str) -> pa.Field:
    return pa.field(name, pa.timestamp("ms", tz="UTC") if kind == "timestamp" else ARROW[kind])


def trials_schema() -> pa.Schema:
    """Vocabulary columns first, then every known parameter (null where a cell's arch/task lacks it)."""
    params = {k: arrow_kind(a) for k, a in sorted(known_params().items())}
    cols = {**{k: v for k, v in TRIAL_COLUMNS.items()}, **{k: v for k, v in params.items() if k not in TRIAL_COLUMNS}}
    return pa.schema([_field(k, v) for k, v in cols.items()])


SCHEMAS = {"metrics": pa.schema([_field(k, v) for k, v in METRIC_COLUMNS.items()]),
           "lag_curves": pa.schema([_field(k, v) for k, v in CURVE_COLUMNS.items()])}


def schema(table: str) -> pa.Schema:
    return trials_schema() if table == "trials" else SCHEMAS[table]


def open_root(root: str) -> tuple[pafs.FileSystem, str]:
    """A local path or a URI (file://, s3://, gs://) -> (filesystem, path inside it)."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


def to_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts; keys outside the schema ignored, missing ones null) in the table's schema.
    Converted row-wise by Arrow itself: a column at a time from Python cost ~40 us per column, 3 ms
    for a one-row trials table, which is what capped the driver's write rate."""
    sch = schema(table)
    stamps = [f.name for f in sch if pa.types.is_timestamp(f.type)]
    if stamps:
        rows = [{**r, **{k: None if r.get(k) is None else int(r[k] * 1000) for k in stamps}}  # epoch s -> ms
                for r in rows]
    return pa.Table.from_pylist(rows, schema=sch)


class Store:
    """Reads and writes one study's files under ROOT/<study>/ on any pyarrow filesystem."""

    def __init__(self, study_dir: str, fs: pafs.FileSystem | None = None):
        self.fs, self.path = (fs, study_dir) if fs is not None else open_root(study_dir)
        # absolute, because trial workers resolve it too, from a working directory of their own
        self.uri = study_dir if "://" in study_dir or fs is not None else self.path
        self._segment_ids: dict[str, frozenset] = {}   # segment file -> its trial ids (the driver's
                                                       # compactor would re-read every segment per batch)

    @property
    def local(self) -> bool:
        """A local (or NFS-mounted) folder: renames are atomic and DuckDB reads it directly."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.join(*parts)).type != pafs.FileType.NotFound

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Atomic where the filesystem can rename (local, NFS); a single PUT on object stores."""
        final = self.join(*parts)
        parent = final.rsplit("/", 1)[0]
        if self.local:
            os.makedirs(parent, exist_ok=True)
        elif self.fs.type_name not in ("s3", "gcs"):  # object stores have no folders: markers would cost a PUT each
            self.fs.create_dir(parent, recursive=True)
        if self.local:
            tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"    # hidden, and not *.parquet: no glob sees it
            with open(tmp, "wb") as f:                  # plain os calls: half the cost of pyarrow's here
                f.write(data)
            self._commit(tmp, final)
        else:
            with self.fs.open_output_stream(final) as f:
                f.write(data)

    def _commit(self, tmp: str, final: str) -> None:
        self.fs.move(tmp, final)     # a rename: readers see the old file or the new one, never half

    def delete(self, *parts: str) -> None:
        try:
            self.fs.delete_file(self.join(*parts))
        except (FileNotFoundError, OSError):
            pass

    def read_bytes(self, *parts: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.join(*parts)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def quarantine(self, path: str) -> None:
        """Move an unreadable file (a truncated Parquet file, a torn checkpoint) to quarantine/
        beside the tables, where no glob reads it, with one warning line: its trial is rerun."""
        rel = path[len(self.path.rstrip("/")) + 1:] if path.startswith(self.path) else path.rsplit("/", 1)[-1]
        dest = self.join("quarantine", rel)
        try:
            self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            self.fs.move(path, dest)
        except OSError:
            self.fs.delete_file(path)
            dest = "(deleted)"
        print(f"warning: {path} is unreadable; moved it to {dest} (its trial will be rerun)", file=sys.stderr)

    def write_rows(self, table: str, rows: list[dict], *name: str) -> None:
        buf = io.BytesIO()
        pq.write_table(to_table(table, rows), buf, use_dictionary=False)   # a few rows: nothing to share
        self.write_bytes(buf.getvalue(), "parquet", table, *name)

    def write_report(self, study: str, trial_id: str, metrics: dict, curve: list[dict]) -> None:
        """One evaluation: its metrics row and its lag_curves rows, keyed by iteration."""
        it = int(metrics["iteration"])
        ident = {"study": study, "trial_id": trial_id}
        self.write_rows("lag_curves", [{**ident, **c, "iteration": it, "step": metrics["step"]} for c in curve],
                        trial_id, f"{it:06d}.parquet")
        self.write_rows("metrics", [{**metrics, **ident}], trial_id, f"{it:06d}.parquet")

    def write_trial(self, row: dict) -> None:
        self.write_rows("trials", [row], f"{row['trial_id']}.parquet")

    def write_reports(self, study: str, trial_id: str, reports: list[tuple[dict, list[dict]]]) -> None:
        """Several evaluations of one trial (iterations a..b, no gaps needed) in one file per table,
        `<a>-<b>.parquet` (`<a>.parquet` for one): the driver's ReportWriter batches them."""
        if not reports:
            return
        reports = sorted(reports, key=lambda r: int(r[0]["iteration"]))
        a, b = int(reports[0][0]["iteration"]), int(reports[-1][0]["iteration"])
        name = f"{a:06d}.parquet" if a == b else f"{a:06d}-{b:06d}.parquet"
        ident = {"study": study, "trial_id": trial_id}
        self.write_rows("lag_curves", [{**ident, **c, "iteration": int(m["iteration"]), "step": m["step"]}
                                       for m, curve in reports for c in curve], trial_id, name)
        self.write_rows("metrics", [{**m, **ident} for m, _ in reports], trial_id, name)

    def drop_trial_rows(self, trial_id: str) -> None:
        """Delete a running trial's metrics and lag_curves files (its own folders)."""
        for table in ("metrics", "lag_curves"):
            try:
                self.fs.delete_dir(self.join("parquet", table, trial_id))
            except (FileNotFoundError, OSError):
                pass

    def drop_after(self, trial_id: str, iteration: int) -> None:
        """Remove a trial's rows past `iteration`: left by an earlier run of the trial that got further."""
        for table in ("metrics", "lag_curves"):
            d = self.join("parquet", table, trial_id)
            for info in self.fs.get_file_info(pafs.FileSelector(d, allow_not_found=True)):
                stem = info.base_name.split(".")[0].split("-")[0]     # <a>.parquet or <a>-<b>.parquet
                if stem.isdigit() and int(stem) > iteration:
                    self.fs.delete_file(info.path)

    # --- segments -----------------------------------------------------------------------------

    def table_dir(self, table: str) -> str:
        return self.join("parquet", table)

    def segment_dir(self, table: str) -> str:
        return self.table_dir(table) if table == "trials" else self.join("parquet", table, SEGMENTS_DIR)

    def _list(self, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))

    def segment_files(self, table: str) -> list[str]:
        return sorted(i.path for i in self._list(self.segment_dir(table))
                      if i.base_name.startswith(SEGMENT) and i.base_name.endswith(".parquet"))

    def loose_files(self, table: str) -> dict[str, list[str]]:
        """Per-trial files by trial id (trials: one each; metrics, lag_curves: one per evaluation)."""
        out: dict[str, list[str]] = {}
        if table == "trials":
            for i in self._list(self.table_dir(table)):
                n = i.base_name
                if n.endswith(".parquet") and not n.startswith(SEGMENT) and i.type == pafs.FileType.File:
                    out[n[: -len(".parquet")]] = [i.path]
            return out
        root = self.table_dir(table).rstrip("/") + "/"
        for i in self._list(self.table_dir(table), recursive=True):
            rel = i.path[len(root):] if i.path.startswith(root) else i.path
            parts = rel.split("/")
            if len(parts) == 2 and parts[0] != SEGMENTS_DIR and parts[1].endswith(".parquet"):
                out.setdefault(parts[0], []).append(i.path)
        return out

    def segment_ids(self, table: str, files: list[str] | None = None) -> set[str]:
        """Trial ids held by the table's segments (one column of each: a few KB per segment)."""
        ids: set[str] = set()
        for f in self.segment_files(table) if files is None else files:
            if f not in self._segment_ids:     # a segment never changes once written (unique name)
                self._segment_ids[f] = frozenset(
                    pq.read_table(f, columns=["trial_id"], filesystem=self.fs).column(0).unique().to_pylist())
            ids.update(self._segment_ids[f])
        return ids

    def _read_many(self, files: list[str], columns: list[str] | None = None) -> list[pa.Table]:
        if not files:
            return []
        def read(f: str) -> pa.Table | None:   # one GET of the whole file: on S3 a footer read is a request of its own
            try:
                with self.fs.open_input_stream(f) as s:
                    return pq.read_table(pa.BufferReader(s.read()), columns=columns)
            except (pa.ArrowException, OSError):     # cut short by a kill or a full disk
                self.quarantine(f)
                return None
        if len(files) < 4:
            tables = [read(f) for f in files]
        else:
            with ThreadPoolExecutor(READ_THREADS) as pool:
                tables = list(pool.map(read, files))
        return [t for t in tables if t is not None]

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table | None:
        """The whole table, each row once: the segments, then per-trial files of trials no
        segment holds (all in this table's schema; columns a file lacks are null)."""
        segs = self.segment_files(table)
        loose_by_trial = self.loose_files(table)
        held = self.segment_ids(table, segs) if segs and loose_by_trial else set()   # nothing to skip: no read
        loose = [f for tid, fs in loose_by_trial.items() if tid not in held for f in fs]
        parts = self._read_many(segs + loose, columns)
        if not parts:
            return None
        return conform(table, pa.concat_tables(parts, promote_options="permissive"), columns)

    def trial_rows(self, columns: list[str] | None = None) -> list[dict]:
        t = self.read_table("trials", columns)
        return [] if t is None else t.to_pylist()

    def compact(self, batch: int = 1, max_rows: int = 2_000_000) -> dict[str, int]:
        """Move finished trials' per-trial files into segment files, when at least `batch` finished
        trials are still in per-trial files (1: always). Safe to run at any time, also concurrently
        with a driver writing (only finished trials, which never change again, are touched), and
        idempotent: per-trial files of a trial a segment already holds (a crash between writing the
        segment and deleting them) are deleted without being read. Returns trials compacted per table."""
        loose_trials = self.loose_files("trials")
        held_trials = self.segment_ids("trials") if self.segment_files("trials") else set()
        finished = set(loose_trials) | held_trials
        fresh = [t for t in loose_trials if t not in held_trials]
        done = {}
        if len(fresh) < batch:
            # still repair what a crash left behind, without starting a new segment
            for table in TABLES:
                held = held_trials if table == "trials" else self.segment_ids(table)
                self._delete_files(f for tid, fs in self.loose_files(table).items() if tid in held for f in fs)
            return {t: 0 for t in TABLES}
        # metrics and lag_curves first: a trial's rows leave its files only once its trials row exists
        for table in ("metrics", "lag_curves", "trials"):
            loose = loose_trials if table == "trials" else self.loose_files(table)
            held = held_trials if table == "trials" else self.segment_ids(table)
            self._delete_files(f for tid, fs in loose.items() if tid in held for f in fs)
            todo = sorted(tid for tid in loose if tid in finished and tid not in held)
            files = [f for tid in todo for f in loose[tid]]
            done[table] = len(todo)
            if not files:
                continue
            tbl = conform(table, pa.concat_tables(self._read_many(files), promote_options="permissive"))
            tbl = tbl.sort_by([("trial_id", "ascending")] + ([("iteration", "ascending")] if table != "trials" else []))
            for start in range(0, max(1, tbl.num_rows), max_rows):
                buf = io.BytesIO()
                pq.write_table(tbl.slice(start, max_rows), buf, row_group_size=128_000)
                name = f"{SEGMENT}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
                seg = self.segment_dir(table)[len(self.path.rstrip("/")) + 1:].split("/")
                self.write_bytes(buf.getvalue(), *seg, name)
            self._delete_files(files)
        return done

    def _delete_files(self, files) -> None:
        """Delete per-trial files, always every file of whole trials: a trial's own folder
        (metrics, lag_curves) goes at once, one LIST and a batched delete on an object store."""
        files = list(files)
        trials_dir = self.table_dir("trials").rstrip("/")
        for d in sorted({f.rsplit("/", 1)[0] for f in files}):
            if d.rstrip("/") == trials_dir:
                continue
            try:
                self.fs.delete_dir(d)
            except (FileNotFoundError, OSError):
                pass
        for f in files:
            if f.rsplit("/", 1)[0].rstrip("/") == trials_dir:
                try:
                    self.fs.delete_file(f)
                except (FileNotFoundError, OSError):
                    pass


def conform(table: str, t: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """A table in the current schema (or its `columns`): missing columns null, extra ones dropped."""
    sch = schema(table)
    fields = [sch.field(c) for c in (columns or sch.names)]
    cols = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
            for f in fields]
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


class Compactor:
    """The driver's compaction schedule: a batch of COMPACT_BATCH finished trials is compacted in a
    background thread (the Tune event loop keeps processing results meanwhile), and whatever is
    left at the end of a run once more than a batch is waiting. Studies below a batch keep their
    per-trial files only."""

    def __init__(self, store: Store, batch: int = COMPACT_BATCH):
        self.store, self.batch = store, batch
        self.waiting = 0
        self.thread = None
        self.error: BaseException | None = None

    def trial_finished(self) -> None:
        self.waiting += 1
        if self.waiting >= self.batch and (self.thread is None or not self.thread.is_alive()):
            import threading
            self.waiting = 0
            self.thread = threading.Thread(target=self._run, name="memscale-compact", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            self.store.compact(batch=self.batch)
        except Exception as e:     # noqa: BLE001 - a failed compaction loses nothing; the next one retries
            self.error = e

    def close(self) -> None:
        """At the end of a run: wait for a running batch, then, in a study that has segments,
        compact every finished trial (a small study keeps its per-trial files; `study compact`)."""
        if self.thread is not None:
            self.thread.join()
        self.store.compact(batch=1 if self.store.segment_files("trials") else self.batch)


class ReportWriter:
    """The driver's buffer of reported evaluations, written a batch per trial (one file per table
    for all of a trial's pending evaluations) instead of two small files per evaluation, which
    capped the driver at a few hundred results/s (each small Parquet file costs ~1 ms of CPU).

    Paced so that writing takes at most SHARE of the driver's time: after a flush that took w
    seconds, the next waits w * (1/SHARE - 1). At a low rate of results every evaluation is written
    as it arrives, as before; as the rate grows the batches grow with it, so the event loop keeps up
    without slowing trials. A trial's pending evaluations are written at once when it ends.

    Exactly once after any kill, without reading anything back: a trial that (re)starts - the
    first result this driver sees from it, a result carrying `replay` (a trial continuing from its
    checkpoint re-sends its whole history), or an iteration not past the last one - brings its
    complete history, so its first batch replaces every file the trial had: its folders are deleted,
    then the batch is written. A kill between the two loses rows of a trial that is still running,
    and its rerun sends them again; rows the driver held unwritten are lost the same way and come
    back the same way. A trial's `trials` row is written only after its last batch (finish), so a
    finished trial's rows are complete and never change again (what compaction relies on)."""

    SHARE = 0.25

    def __init__(self, store: Store, study: str, share: float = SHARE):
        self.store, self.study, self.share = store, study, share
        self.pending: dict[str, dict[int, tuple[dict, list]]] = {}
        self.last: dict[str, int] = {}         # last iteration seen, per trial still running
        self.fresh: set[str] = set()           # its next batch replaces all its files
        self.next_flush = 0.0                  # time.monotonic() before which flush_due waits

    def report(self, trial_id: str, metrics: dict, curve: list, replay: list = ()) -> None:
        it = int(metrics["iteration"])
        if replay or trial_id not in self.last or it <= self.last[trial_id]:
            self.pending[trial_id] = {}
            self.fresh.add(trial_id)
        rows = self.pending.setdefault(trial_id, {})
        for m, c in [*replay, (metrics, curve)]:
            rows[int(m["iteration"])] = (m, c)
        self.last[trial_id] = it

    def flush_due(self) -> None:
        """Write every trial's pending evaluations, unless the last write was too recent."""
        if self.pending and time.monotonic() >= self.next_flush:
            self._paced(list(self.pending))

    def _paced(self, trial_ids: list[str]) -> None:
        t0 = time.monotonic()
        for tid in trial_ids:
            self.flush(tid)
        now = time.monotonic()
        self.next_flush = max(self.next_flush, now + (now - t0) * (1 / self.share - 1))

    def flush(self, trial_id: str) -> None:
        rows = self.pending.pop(trial_id, None)
        if not rows:
            return
        if trial_id in self.fresh:
            self.store.drop_trial_rows(trial_id)
            self.fresh.discard(trial_id)
        self.store.write_reports(self.study, trial_id, list(rows.values()))

    def finish(self, trial_id: str) -> None:
        """The trial ended: its last batch, before the caller writes its `trials` row."""
        self._paced([trial_id])
        self.last.pop(trial_id, None)
        self.fresh.discard(trial_id)

    def close(self) -> None:
        """The end of a run (finished or interrupted): every trial's pending evaluations."""
        for tid in list(self.pending):
            self.flush(tid)
