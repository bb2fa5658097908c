"""The Parquet tables (docs/design.md, "Results"): schema, and atomic, idempotent writes.

Every file name is deterministic: `trials/<trial_id>.parquet`, `metrics/<trial_id>/<iteration>.parquet`,
`lag_curves/<trial_id>/<iteration>.parquet`. Writing a row again replaces the same file, so a
replayed or recomputed report can never duplicate a row: exactly once by construction. Files are
written to a hidden temporary name that no reader's glob matches, then renamed.
"""
from __future__ import annotations

import io
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.config import arrow_kind, known_params

TABLES = ("trials", "metrics", "lag_curves")
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
    sch = schema(table)
    cols = {}
    for f in sch:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_timestamp(f.type):
            vals = [None if v is None else int(v * 1000) for v in vals]   # epoch seconds -> ms
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.Table.from_pydict(cols, schema=sch)


class Store:
    """Reads and writes one study's files under ROOT/<study>/ on any pyarrow filesystem."""

    def __init__(self, study_dir: str, fs: pafs.FileSystem | None = None):
        self.fs, self.path = (fs, study_dir) if fs is not None else open_root(study_dir)
        # absolute, because trial workers resolve it too, from a working directory of their own
        self.uri = study_dir if "://" in study_dir or fs is not None else self.path

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
        self.fs.create_dir(parent, recursive=True)
        if self.local:
            tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"    # hidden, and not *.parquet: no glob sees it
            with self.fs.open_output_stream(tmp) as f:
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

    def write_rows(self, table: str, rows: list[dict], *name: str) -> None:
        buf = io.BytesIO()
        pq.write_table(to_table(table, rows), buf)
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

    def drop_after(self, trial_id: str, iteration: int) -> None:
        """Remove a trial's rows past `iteration`: left by an earlier run of the trial that got further."""
        for table in ("metrics", "lag_curves"):
            d = self.join("parquet", table, trial_id)
            for info in self.fs.get_file_info(pafs.FileSelector(d, allow_not_found=True)):
                stem = info.base_name.split(".")[0]
                if stem.isdigit() and int(stem) > iteration:
                    self.fs.delete_file(info.path)

    def trial_rows(self) -> list[dict]:
        d = self.join("parquet", "trials")
        files = [i.path for i in self.fs.get_file_info(pafs.FileSelector(d, allow_not_found=True))
                 if i.base_name.endswith(".parquet")]
        if not files:
            return []
        tables = [pq.read_table(f, filesystem=self.fs) for f in files]
        return pa.concat_tables(tables, promote_options="permissive").to_pylist()
