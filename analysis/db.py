"""DuckDB views over a study's Parquet files: `trials`, `metrics`, `lag_curves`, and one view per
query file in analysis/queries. The Parquet globs are read on every query, so new files show up
without rebuilding. `study.duckdb` holds only these views, so any number of readers can open it
read-only (docs/design.md, "Results").
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

from study.errors import UsageError
from study.results import SEGMENT, TABLES, Store, schema

QUERIES = Path(__file__).parent / "queries"
GLOBS = {"trials": "parquet/trials/*.parquet", "metrics": "parquet/metrics/*/*.parquet",
         "lag_curves": "parquet/lag_curves/*/*.parquet"}
REMOTE_PREFIX = "_remote_"
DUCK = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR"}


def duck_type(t: pa.DataType) -> str:
    return "TIMESTAMPTZ" if pa.types.is_timestamp(t) else DUCK.get(t, "VARCHAR")


def query_names() -> list[str]:
    return sorted(p.stem for p in QUERIES.glob("*.sql"))


def query_text(name: str) -> str:
    return (QUERIES / f"{name}.sql").read_text().strip().rstrip(";")


def question(name: str) -> str:
    first = (QUERIES / f"{name}.sql").read_text().splitlines()[0]
    return first.lstrip("-").strip()


def view_sql(store: Store, table: str) -> str:
    """A view over the table's files, or a typed empty view while there are none yet (a view over
    a glob that matches nothing fails in DuckDB). Once the table has segments (study/results.py),
    the per-trial files of a trial a segment already holds are skipped: they are only left over
    from a compaction that was interrupted or is running now."""
    glob = f"{store.path.rstrip('/')}/{GLOBS[table]}"
    segs = store.segment_files(table)
    has_files = bool(segs) or bool(store.loose_files(table))
    if has_files and not store.local:    # s3://, gs://: read through pyarrow's filesystem, no DuckDB extension needed
        return f"SELECT * FROM {REMOTE_PREFIX}{table}"
    if has_files and not segs:
        return f"SELECT * FROM read_parquet('{glob}', union_by_name=true)"
    if has_files:
        seg_glob = f"{store.segment_dir(table).rstrip('/')}/{SEGMENT}*.parquet"
        return (f"SELECT * EXCLUDE (filename) FROM read_parquet('{glob}', union_by_name=true, filename=true) "
                f"WHERE regexp_matches(filename, '/{SEGMENT}[^/]*$') OR trial_id NOT IN "
                f"(SELECT trial_id FROM read_parquet('{seg_glob}') WHERE trial_id IS NOT NULL)")
    cols = ", ".join(f"CAST(NULL AS {duck_type(f.type)}) AS \"{f.name}\"" for f in schema(table))
    return f"SELECT {cols} WHERE false"


def register_remote(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """Expose a remote study's tables to DuckDB as pyarrow datasets over the store's filesystem:
    the segments, and the per-trial files of trials no segment holds (one LIST per folder level,
    and no GET of a per-trial file until a query reads it)."""
    import pyarrow.dataset as ds
    for t in TABLES:
        segs = store.segment_files(t)
        held = store.segment_ids(t, segs) if segs else set()
        files = segs + [f for tid, fs in store.loose_files(t).items() if tid not in held for f in fs]
        if files:
            con.register(f"{REMOTE_PREFIX}{t}", ds.dataset(files, schema=schema(t), filesystem=store.fs,
                                                           format="parquet"))


def create_views(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """In the connection's current database (`USE`), so the query views bind to its tables."""
    if not store.local:
        register_remote(con, store)
    for t in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS {view_sql(store, t)}")
    create_query_views(con)


def create_query_views(con: duckdb.DuckDBPyConnection) -> None:
    """One view per query file. Query views may read other query views (crossover reads
    cell_scores), and DuckDB binds a view when it is created, so a view whose inputs do not exist
    yet is retried after the others; a query that never binds raises its own error."""
    pending = query_names()
    while pending:
        failed: list[tuple[str, duckdb.Error]] = []
        for name in pending:
            try:
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {query_text(name)}")
            except duckdb.CatalogException as e:
                failed.append((name, e))
        if len(failed) == len(pending):
            name, err = failed[0]
            raise duckdb.CatalogException(f"analysis/queries/{name}.sql: {err}")
        pending = [name for name, _ in failed]


def connect(study_dir: str, queries: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the views (no file lock, so it never blocks another reader),
    and a best-effort refresh of study.duckdb for other clients. queries=False leaves out the
    query views: binding them reads every table's file footers, which a query on one table need not."""
    store = Store(study_dir)
    con = duckdb.connect()
    con.execute("SET parquet_metadata_cache = true")   # views re-read file footers on every bind otherwise
    if not store.local:
        register_remote(con, store)
    for t in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS {view_sql(store, t)}")
    if queries:
        create_query_views(con)
    if store.local:
        persist_views(store)
    return con


def snapshot(study_dir: str) -> duckdb.DuckDBPyConnection:
    """Like connect, but the three tables are read once into memory: a report runs a few dozen
    queries over them (each view would re-read every Parquet file), and all its tables and
    figures then describe the same moment even while a sweep keeps writing."""
    store = Store(study_dir)
    con = duckdb.connect()
    if not store.local:
        register_remote(con, store)
    for t in TABLES:
        con.execute(f"CREATE TABLE {t} AS {view_sql(store, t)}")
    create_query_views(con)
    if store.local:
        persist_views(store)
    return con


def fingerprint(store: Store) -> str:
    """What study.duckdb should contain: the base views' SQL (which changes when a table gets its
    first file) and every query file."""
    import hashlib
    parts = [view_sql(store, t) for t in TABLES] + [query_text(n) for n in query_names()]
    return "memscale views " + hashlib.sha256("\n;\n".join(parts).encode()).hexdigest()[:16]


def persist_views(store: Store) -> None:
    """Write study.duckdb in the v1.0.0 storage format, readable by the DuckDB CLI on PyPI.

    Skipped when the file already holds the same views (their fingerprint is the comment on the
    `trials` view): rewriting takes a write lock and re-binds every view over every Parquet file.
    """
    path = store.join("study.duckdb")
    want = fingerprint(store)
    try:
        con = duckdb.connect()
        if store.exists("study.duckdb"):
            con.execute(f"ATTACH '{path}' AS s (READ_ONLY)")
            have = con.execute("SELECT comment FROM duckdb_views() WHERE database_name = 's' "
                               "AND view_name = 'trials'").fetchall()
            con.execute("DETACH s")
            if have and have[0][0] == want:
                return
        con.execute(f"ATTACH '{path}' AS s (STORAGE_VERSION 'v1.0.0')")
        con.execute("USE s")
        create_views(con, store)
        con.execute(f"COMMENT ON VIEW trials IS '{want}'")
        con.execute("USE memory")
        con.execute("DETACH s")
        con.close()
    except duckdb.Error:
        pass    # another process holds the file: the in-memory views still answer


def run_query(study_dir: str, query: str) -> tuple[list[str], list[tuple]]:
    import re
    sql = query_text(query) if query in query_names() else query
    # the query views only when the SQL names one (a word match is enough: binding them is the cost)
    con = connect(study_dir, queries=any(re.search(rf"\b{n}\b", sql, re.I) for n in query_names()))
    try:
        cur = con.execute(sql)
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        raise UsageError(f"study sql: {first} (named queries: {', '.join(query_names()) or 'none'})") from None
    cols = [d[0] for d in cur.description]
    return cols, cur.fetchall()


def describe(study_dir: str) -> str:
    con = connect(study_dir)
    lines = []
    for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall():
        cols = con.execute(f"DESCRIBE {name}").fetchall()
        what = f"  -- {question(name)}" if name in query_names() else ""
        lines.append(f"{name}{what}")
        lines.append("  " + ", ".join(f"{c[0]} {c[1]}" for c in cols))
    return "\n".join(lines)


def fmt_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_result(result: tuple[list[str], list[tuple]], fmt: str = "table", out=None) -> None:
    cols, rows = result
    out = out or sys.stdout
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(cols)
        w.writerows(rows)
    elif fmt == "json":
        json.dump([dict(zip(cols, r)) for r in rows], out, default=str, indent=1)
        out.write("\n")
    elif fmt == "parquet":
        import pyarrow.parquet as pq
        tbl = pa.Table.from_pylist([dict(zip(cols, r)) for r in rows])
        pq.write_table(tbl, sys.stdout.buffer if out is sys.stdout else out)
    else:
        text = [[fmt_value(v) for v in r] for r in rows]
        widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(cols)]
        out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip() + "\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for r in text:
            out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
        out.write(f"({len(rows)} rows)\n")
