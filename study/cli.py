"""The `study` command: parses, calls, prints (docs/design.md, "Command line").

Exit codes: 0 success, 2 bad input (spec, arguments, folder), 1 anything else; the reason on stderr.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from pyarrow.fs import FileSelector

from study.config import SpecError, UsageError, cells, spec_fingerprint
from study.validate import parse_spec, read_spec_text
from study.trackers import check as check_trackers


class Parser(argparse.ArgumentParser):
    def error(self, message):       # argparse exits 2 too, but we want our one-line format
        raise UsageError(f"study: {message}")


def _not_a_folder(path: str) -> bool:
    """Exists and is not a directory (a file, a device); a path the OS refuses (too long) is a
    UsageError too."""
    try:
        p = Path(path)
        return p.exists() and not p.is_dir()
    except OSError as e:
        raise UsageError(f"{path if len(path) <= 80 else path[:77] + '...'}: unusable path ({e.strerror})") from None


def study_dir_of(root: str, name: str) -> str:
    """ROOT/<study>. The name is a plain folder name (config.STUDY_NAME), so this never leaves ROOT."""
    if not root.strip():
        raise UsageError("study run: --results: empty path (give a folder or a URI)")
    if "://" not in root and _not_a_folder(root):
        raise UsageError(f"{root}: --results is a file, not a folder")
    return f"{root.rstrip('/')}/{name}"


def open_study(path: str):
    """A results folder -> (Store, Spec), or UsageError when it is not one."""
    from study.results import Store
    if not path.strip():
        raise UsageError("study: DIR: empty path (give a study folder)")
    if "://" not in path and _not_a_folder(path):
        raise UsageError(f"{path}: a file, not a study folder")
    store = Store(path)
    text = store.read_bytes("spec.yaml")
    if text is None:
        raise UsageError(f"{path}: not a study folder (no spec.yaml); run `study run SPEC` first")
    try:
        from study import grow
        # a hand-edited spec.yaml is refused: the results were produced under the recorded versions
        current = grow.check_spec(store, text.decode("utf-8"), grow.load_history(store))
        # validated in full when it was run; an older memscale's spec still opens
        return store, parse_spec(current, f"{path}/spec.yaml", check_values=False)
    except UnicodeDecodeError:
        raise UsageError(f"{path}/spec.yaml: not UTF-8 text") from None
    except SpecError as e:
        raise UsageError(str(e)) from None


def prepare_folder(a, spec, text: str, path: str):
    """The study folder for `study run`, with the spec frozen in it (a Store)."""
    from study.results import Store
    from study import grow
    store = Store(path)
    old = store.read_bytes("spec.yaml")
    if old is not None and not a.force_new:
        return extend_folder(a, spec, text, path, store, old.decode("utf-8", "replace"))
    if old is not None:
        if not store.local:
            raise UsageError(f"{path}: --force-new cannot move a remote folder; delete it yourself")
        if Path(store.path).resolve() == Path(a.results).resolve():   # never move the results root
            raise UsageError(f"{path}: is the results folder itself; refusing --force-new")
        aside = f"{store.path}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(store.path, aside)
        print(f"moved the old study to {aside}", file=sys.stderr)
        store = Store(path)
    elif store.fs.get_file_info(FileSelector(store.path, allow_not_found=True)):
        raise UsageError(f"{path}: exists and is not a memscale study folder; choose another --results")
    check_trackers(spec.log, store.local)        # a tracker that cannot run: exit 2, nothing written
    grow.record(store, grow.History(), text)     # spec.yaml, and version 1 in specs/
    return store


def extend_folder(a, spec, text: str, path: str, store, old: str):
    """`study run` on an existing study: the same spec is resumed with `study resume`; a changed
    one prints the plan (cells kept, added, dropped; trials to run) and, with --extend, is recorded
    as the next spec version and runs only what is new (study/grow.py)."""
    from study import grow
    history = grow.load_history(store, old)
    current = grow.check_spec(store, old, history)          # a hand-edited spec.yaml: exit 2
    try:
        same = spec_fingerprint(current) == spec_fingerprint(text)
        old_spec = parse_spec(current, f"{path}/spec.yaml", check_values=False)
    except (SpecError, UnicodeDecodeError, ValueError):    # an unreadable old spec is a different spec
        same, old_spec = False, None
    if same and not a.extend:
        raise UsageError(f"{path}: already holds study {spec.study!r}; continue it with `study resume {path}`")
    finished = {r["trial_id"]: r for r in store.trial_rows(["trial_id", "status", "steps", "train_flops"])}
    plan = grow.make_plan(old_spec, spec, history.legacy, finished)
    n = history.version or 0
    for line in plan.lines(spec.study, n, n if same else n + 1):
        print(line)
    if not a.extend:
        raise UsageError(f"{path}: holds study {spec.study!r} with a different spec; pass --extend to grow it "
                         f"as planned above (nothing already run is redone), or --force-new to move it aside "
                         f"and start again")
    grow.refuse_if_running(store)
    check_trackers(spec.log, store.local)
    grow.record(store, history, text, note=None if same else "study run --extend")
    return store


def cmd_run(a) -> int:
    text = read_spec_text(a.spec)
    spec = parse_spec(text, a.spec)
    grid = cells(spec)
    n = len(grid) * spec.trials_per_cell * len(spec.seeds)
    from study import cost
    rates = cost.rates_from_args(a)      # a malformed calibration file stops here, nothing written
    if a.dry_run:
        print(f"study {spec.study}: {len(grid)} cells x {spec.trials_per_cell} trials x "
              f"{len(spec.seeds)} seeds = {n} trials")
        for c in grid:
            print(f"  {c.id}  {c.label}")
        cost.print_preview(spec, rates, a)
        return 0
    path = a.study_dir = study_dir_of(a.results, spec.study)
    try:
        store = prepare_folder(a, spec, text, path)
        cost.store_prediction(spec, store, rates)   # for `study report`: predicted vs measured time
    except OSError as e:          # read-only, full, a name too long for the filesystem
        raise UsageError(f"{path}: cannot write the study folder ({e.strerror or e})") from None
    from study.sweep import run_study
    try:
        return run_study(spec, store, a.address)
    except UsageError:
        # refused before anything ran (resources, another driver's Ray): leave no folder behind,
        # so the same command works once the cause is fixed
        if store.local and {p.name for p in Path(store.path).iterdir()} <= {"spec.yaml", "specs", "optuna.journal", "driver.json", "prediction.json"}:
            shutil.rmtree(store.path)
        raise


def cmd_resume(a) -> int:
    store, spec = open_study(a.dir)
    from study import grow
    grow.migrate(store, grow.load_history(store))   # a study from before spec history: record it
    from study.sweep import run_study
    return run_study(spec, store, a.address)


def cmd_status(a) -> int:
    store, spec = open_study(a.dir)
    from study import grow
    from study.identity import Wanted, parse_trial_id, study_cells
    from study.results import pid_alive    # not study.sweep: no Ray import for a status
    rows = {r["trial_id"]: r for r in store.trial_rows(["trial_id", "status", "memory_length", "steps", "train_flops"])}
    history = grow.load_history(store)
    grid = study_cells(spec, history.legacy)
    want = Wanted(spec.budget, rows)
    per_cell = spec.trials_per_cell * len(spec.seeds)
    done_cells, best, counted = 0, [], set()
    for c in grid:
        ids = [want.want(c.id, k, s)[0] for k in range(spec.trials_per_cell) for s in spec.seeds]
        got = [rows[i] for i in ids if i in rows]
        done_cells += len(got) == per_cell
        counted.update(r["trial_id"] for r in got)
        scored = [r for r in got if r.get("memory_length") is not None]
        top = max(scored, key=lambda r: r["memory_length"], default=None)
        best.append((c, len(got), top))
    total = len(grid) * per_cell
    version = f" (spec version {history.version} of {len(history.versions)})" if history.recorded else ""
    print(f"study {spec.study}: cells done {done_cells}/{len(grid)}, trials finished {len(counted)}/{total}{version}")
    counts = Counter(r["status"] for r in rows.values())
    print("trials by status: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"))
    raw = store.read_bytes("driver.json")
    info = json.loads(raw) if raw else {}
    import socket
    running = bool(info) and info.get("host") == socket.gethostname() and pid_alive(info.get("pid", -1))
    print(f"driver: {'running, pid ' + str(info['pid']) if running else 'not running'}")
    print("best trial per cell (memory_length):")
    for c, n, top in best:
        desc = f"{top['trial_id']} L*={top['memory_length']}" if top else "-"
        print(f"  {c.id} {c.label:<40} {n}/{per_cell} finished  best {desc}")
    # the rest of a grown study: cells an earlier spec version had, and rows at a shorter budget
    current = {c.id for c in grid}
    earlier = {i: cv for i, cv in grow.every_cell(store, history).items() if i not in current}
    by_cell = Counter(p[0] for p in map(parse_trial_id, rows) if p)
    if earlier:
        print("dropped cells (results kept, queryable):")
        for i, (c, v) in sorted(earlier.items(), key=lambda kv: kv[1][0].label):
            print(f"  {i} {c.label:<40} {by_cell.get(i, 0)} trials  last in spec version {v}")
    shorter = sum(1 for t in rows if t not in counted and (p := parse_trial_id(t)) and p[0] in current)
    if shorter:
        print(f"rows at a shorter budget (continued since) or of seeds/slots no longer in the spec: {shorter}")
    return 0


def cmd_sql(a) -> int:
    from analysis.db import print_result, run_query, describe
    store, _ = open_study(a.dir)
    if a.query is None:
        print(describe(store.uri))
        return 0
    print_result(run_query(store.uri, a.query, write=a.write), a.format)
    return 0


def cmd_report(a) -> int:
    from analysis.report import write_report
    store, spec = open_study(a.dir)
    out = write_report(store.uri, spec)
    print(f"wrote {out}")
    return 0


def cmd_compact(a) -> int:
    """Move finished trials' per-trial files into segment files (study/results.py): afterwards any
    Parquet reader sees each row once, in a few large files."""
    store, _ = open_study(a.dir)
    from study.results import pid_alive
    import socket
    raw = store.read_bytes("driver.json")
    info = json.loads(raw) if raw else {}
    if info and info.get("host") == socket.gethostname() and pid_alive(info.get("pid", -1)):
        raise UsageError(f"{a.dir}: a driver (pid {info['pid']}) is running this study; it compacts as it goes "
                         "and at its end")
    done = store.compact()
    print("compacted: " + ", ".join(f"{t} {n} trials" for t, n in done.items()))
    return 0


def cmd_list(a) -> int:
    from study.registry import MODELS, TASKS
    import study.models  # noqa: F401
    import study.tasks  # noqa: F401
    for title, reg in (("archs", MODELS), ("tasks", TASKS)):
        print(f"{title}:")
        for n in reg.names():
            e = reg.get(n)
            paper = f" [{e.paper}]" if e.paper else ""
            print(f"  {n:<22} {e.description}{paper}")
    return 0


def cmd_params(a) -> int:
    from study import reference
    print(reference.markdown() if a.markdown else reference.text(), end="")
    return 0


def parser() -> Parser:
    p = Parser(prog="study", description="memscale: memory length per unit of compute")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    r = sub.add_parser("run", help="validate a spec and run every cell of its grid")
    r.add_argument("spec")
    r.add_argument("--results", default="results", help="results root (path or URI); default ./results")
    r.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto)")
    r.add_argument("--dry-run", action="store_true", help="validate and print the cells and trial count")
    r.add_argument("--force-new", action="store_true", help="move an existing study folder aside and start again")
    r.add_argument("--extend", action="store_true",
                   help="grow an existing study to this spec: run only the new cells, seeds, trials and steps")
    from study import calibrate, cost
    cost.add_arguments(r)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("calibrate", help="measure training throughput per arch on this machine (for --dry-run)")
    calibrate.add_arguments(s)
    s.set_defaults(fn=calibrate.cmd_calibrate)
    s = sub.add_parser("resume", help="continue a study after a crash or a stop")
    s.add_argument("dir")
    s.add_argument("--address", default=None)
    s.set_defaults(fn=cmd_resume)
    s = sub.add_parser("status", help="cells and trials done, by status, best per cell")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_status)
    s = sub.add_parser("sql", help="run SQL or a named query over the study's tables")
    s.add_argument("dir")
    s.add_argument("query", nargs="?", help="SQL text or the name of a file in analysis/queries")
    s.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    s.add_argument("--write", action="store_true",
                   help="let the SQL write files and load extensions (COPY ... TO, ATTACH, INSTALL); "
                        "by default it may only read this study's tables")
    s.set_defaults(fn=cmd_sql)
    s = sub.add_parser("report", help="write figures and report.html")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_report)
    s = sub.add_parser("compact", help="move finished trials' files into a few segment files")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_compact)
    s = sub.add_parser("list", help="registered archs and tasks")
    s.set_defaults(fn=cmd_list)
    s = sub.add_parser("params", help="every key a spec may set: type, default, range, which archs/tasks")
    s.add_argument("--markdown", action="store_true", help="as docs/spec.md (study params --markdown > docs/spec.md)")
    s.set_defaults(fn=cmd_params)
    return p


def main(argv: list[str] | None = None) -> int:
    a = None
    try:
        a = parser().parse_args(argv)
        return a.fn(a)
    except (SpecError, UsageError) as e:
        print(" ".join(str(e).split("\n")), file=sys.stderr)      # the contract: one line
        return 2
    except BrokenPipeError:         # `study sql ... | head`
        return 0
    except KeyboardInterrupt:
        where = getattr(a, "study_dir", None) or getattr(a, "dir", None) or "DIR"
        print(f"study: interrupted; continue with `study resume {where}`", file=sys.stderr)
        return 1
    except Exception as e:          # noqa: BLE001 - the contract is one line and exit 1
        print(f"study: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
