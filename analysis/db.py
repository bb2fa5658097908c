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


def sql_str(text: str) -> str:
    """A SQL string literal: every path pasted into SQL goes through here (a folder may be named
    `x'); COPY ...`)."""
    return "'" + text.replace("'", "''") + "'"


def globbable(store: Store) -> bool:
    """DuckDB reads the folder by glob itself: local, and no glob characters in the path (a folder
    named `run[1]` would match `run1`)."""
    return store.local and not any(c in store.path for c in "*?[]{}")


def view_sql(store: Store, table: str, arrow: bool = False) -> str:
    """A view over the table's files, or a typed empty view while there are none yet (a view over
    a glob that matches nothing fails in DuckDB). arrow: read through pyarrow datasets registered
    on the connection (remote stores, odd paths, and read-only connections). Once the table has
    segments (study/results.py), the per-trial files of a trial a segment already holds are
    skipped: they are only left over from a compaction that was interrupted or is running now."""
    glob = f"{store.path.rstrip('/')}/{GLOBS[table]}"
    segs = store.segment_files(table)
    has_files = bool(segs) or bool(store.loose_files(table))
    if has_files and (arrow or not globbable(store)):
        # s3://, gs://, odd paths, read-only: pyarrow datasets (register_remote), no DuckDB extension
        return f"SELECT * FROM {REMOTE_PREFIX}{table}"
    cols = ", ".join(f"CAST(NULL AS {duck_type(f.type)}) AS \"{f.name}\"" for f in schema(table))
    empty = f"SELECT {cols} WHERE false"
    # trials written by an older memscale lack the columns added since (peak_tensor_bytes): a
    # union by name with the typed empty table gives them as NULL, so the queries bind on any study
    known = f"({empty}) UNION ALL BY NAME " if table == "trials" else ""
    if has_files and not segs:
        return f"{known}SELECT * FROM read_parquet({sql_str(glob)}, union_by_name=true)"
    if has_files:
        seg_glob = f"{store.segment_dir(table).rstrip('/')}/{SEGMENT}*.parquet"
        return (f"{known}SELECT * EXCLUDE (filename) FROM read_parquet({sql_str(glob)}, union_by_name=true, filename=true) "
                f"WHERE regexp_matches(filename, '/{SEGMENT}[^/]*$') OR trial_id NOT IN "
                f"(SELECT trial_id FROM read_parquet({sql_str(seg_glob)}) WHERE trial_id IS NOT NULL)")
    return empty


def _selector(store: Store, table: str):
    from pyarrow.fs import FileSelector
    return FileSelector(store.join("parquet", table), allow_not_found=True, recursive=True)


def register_remote(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """Expose a remote study's tables to DuckDB as pyarrow datasets over the store's filesystem:
    the segments, and the per-trial files of trials no segment holds (one LIST per folder level,
    and no GET of a per-trial file until a query reads it)."""
    import pyarrow.dataset as ds
    for t in TABLES:
        segs = store.segment_files(t)
        loose = store.loose_files(t)
        held = store.segment_ids(t, segs) if segs and loose else set()    # a compacted table: no read
        files = segs + [f for tid, fs in loose.items() if tid not in held for f in fs]
        if files:
            con.register(f"{REMOTE_PREFIX}{t}", ds.dataset(files, schema=schema(t), filesystem=store.fs,
                                                           format="parquet"))


def create_views(con: duckdb.DuckDBPyConnection, store: Store, arrow: bool = False,
                 queries: bool = True) -> None:
    """In the connection's current database (`USE`), so the query views bind to its tables."""
    arrow = arrow or not globbable(store)
    if arrow:
        register_remote(con, store)
    for t in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS {view_sql(store, t, arrow)}")
    if queries:
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


def connect(study_dir: str, write: bool = True, queries: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the views (no file lock, so it never blocks another reader),
    and a best-effort refresh of study.duckdb for other clients. queries=False leaves out the
    query views: binding them reads every table's file footers, which a query on one table need not.

    write=False: the SQL may read the study's tables and nothing else. The tables come in as
    pyarrow datasets, then DuckDB's own switches close every file and network access (COPY TO,
    ATTACH, INSTALL, read_csv('/etc/...')) and are locked so the query cannot turn them back on."""
    store = Store(study_dir)
    quarantine_unreadable(store)
    con = duckdb.connect()
    con.execute("SET parquet_metadata_cache = true")   # views re-read file footers on every bind otherwise
    create_views(con, store, arrow=not write, queries=queries)
    if store.local:
        persist_views(store)
    if not write:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


SNAPSHOT_MEMORY = "1500MB"   # DuckDB's own cap in a report; past it, it spills to the scratch folder


def snapshot(study_dir: str, scratch: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """Like connect, but the three tables are read once into DuckDB's memory: a report runs a few
    dozen queries over them (each view would re-read every Parquet file), and all its tables and
    figures then describe the same moment even while a sweep keeps writing. scratch: a folder
    DuckDB may spill to, with its memory capped at SNAPSHOT_MEMORY (a 100,000-trial study's lag
    curves are 8 million rows, ~1 GB in DuckDB's compressed form); the caller removes it. An
    in-memory database that can spill, not a database file: at 100k trials a file took 93 s to
    fill against 14 s in memory, for 1.3 GB peak against 1.8 GB (loaded machine)."""
    store = Store(study_dir)
    quarantine_unreadable(store)
    if scratch is None:
        con = duckdb.connect()
    else:
        Path(scratch).mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(config={"memory_limit": SNAPSHOT_MEMORY, "temp_directory": str(Path(scratch) / "tmp")})
    if not globbable(store):
        register_remote(con, store)
    for t in TABLES:
        retrying(store, lambda: con.execute(f"CREATE OR REPLACE TABLE {t} AS {view_sql(store, t)}"))
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
    if not globbable(store):
        return      # its views could not name the files; `study sql` still answers
    path = store.join("study.duckdb")
    want = fingerprint(store)
    for attempt in (1, 2):
        try:
            con = duckdb.connect()
            if store.exists("study.duckdb"):
                con.execute(f"ATTACH {sql_str(path)} AS s (READ_ONLY)")
                have = con.execute("SELECT comment FROM duckdb_views() WHERE database_name = 's' "
                                   "AND view_name = 'trials'").fetchall()
                con.execute("DETACH s")
                if have and have[0][0] == want:
                    return
            con.execute(f"ATTACH {sql_str(path)} AS s (STORAGE_VERSION 'v1.0.0')")
            con.execute("USE s")
            create_views(con, store)
            con.execute(f"COMMENT ON VIEW trials IS {sql_str(want)}")
            con.execute("USE memory")
            con.execute("DETACH s")
            con.close()
            return
        except duckdb.Error as e:
            # Another process holds the file: the in-memory views still answer. Anything else
            # means the file is damaged (a killed write): it holds only views, so rebuild it.
            if attempt == 2 or "lock" in str(e).lower():
                return
            print(f"{path}: unreadable ({str(e).splitlines()[0][:120]}); rebuilding it", file=sys.stderr)
            store.delete("study.duckdb")
            store.delete("study.duckdb.wal")


def quarantine_unreadable(store: Store, tables=("trials",)) -> None:
    """Move aside every Parquet file of these tables whose footer cannot be read (a copy cut
    short, a full disk): one warning line each, and the tables answer without it. `trials` is
    checked up front (one small file per trial); metrics and lag_curves when a query trips on one
    (retrying)."""
    import pyarrow.parquet as pq
    for t in tables:
        for info in store.fs.get_file_info(_selector(store, t)):
            if not info.path.endswith(".parquet"):
                continue
            try:
                with store.fs.open_input_file(info.path) as f:
                    pq.ParquetFile(f)
            except (pa.ArrowException, OSError):
                store.quarantine(info.path)


def retrying(store: Store, fn, tries: int = 20):
    """fn(), quarantining a damaged Parquet file of the study that DuckDB names in its error."""
    import re
    for _ in range(tries):
        try:
            return fn()
        except (duckdb.Error, pa.ArrowException) as e:
            m = re.search(r"""["']?(%s/parquet/[^"'\s]+\.parquet)""" % re.escape(store.path.rstrip("/")), str(e))
            if not m or not store.local:
                raise
            store.quarantine(m.group(1))
    return fn()


def run_query(study_dir: str, query: str, write: bool = True) -> tuple[list[str], list[tuple]]:
    from study.config import UsageError
    if not query.strip():
        raise UsageError("study sql: empty query (give SQL or a query name: "
                         f"{', '.join(query_names()) or 'none'})")
    import re
    sql = query_text(query) if query in query_names() else query
    # the query views only when the SQL names one (a word match is enough: binding them is the cost)
    con = connect(study_dir, write=write,
                  queries=any(re.search(rf"\b{n}\b", sql, re.I) for n in query_names()))
    try:
        cur = retrying(Store(study_dir), lambda: con.execute(sql))
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        if not write and "disabled by configuration" in first:
            first += "; pass --write to let a query write files or load extensions"
        raise UsageError(f"study sql: {first} (named queries: {', '.join(query_names()) or 'none'})") from None
    if cur is None or cur.description is None:    # comments only, or a statement without a result
        return ["result"], []
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
