"""Who may drive what: at most one driver per study folder, and one embedded Ray per machine.

Why a module of its own: both locks are taken before Ray starts (study/sweep.py, `run_study`), and
neither needs Ray or Optuna; two drivers writing one study's files, or two Rays claiming one
machine's CPUs and memory, fail in ways that are hard to read later, so each is refused at once
with a one-line UsageError.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from study.errors import UsageError
from study.results import Store, pid_alive


def acquire_driver_lock(store: Store) -> None:
    """At most one driver per study: a second one would write the same files. Taken atomically
    (created whole by a hard link: of two drivers starting at the same instant exactly one creates it);
    a lock left by a dead driver on this host is broken and taken again."""
    me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
    if not store.local:           # object stores have no exclusive create: read, then write
        _check_holder(store.read_bytes("driver.json"))
        store.write_bytes(me, "driver.json")
        return
    path = store.join("driver.json")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            _create_whole(path, me)
        except FileExistsError:
            try:
                raw = Path(path).read_bytes()
            except FileNotFoundError:
                continue          # its driver just finished
            _check_holder(raw)
            # stale: the holder is dead. Rename it away first, so of two drivers breaking the same
            # stale lock only one succeeds and the other retries the exclusive create.
            try:
                os.rename(path, f"{path}.stale-{os.getpid()}")
                os.unlink(f"{path}.stale-{os.getpid()}")
            except FileNotFoundError:
                pass
            continue
        return
    raise UsageError(f"{path}: could not take the driver lock; is another driver starting?")


def _create_whole(path: str, data: bytes) -> None:
    """Create `path` holding `data`, or FileExistsError, so that no reader ever sees it empty.
    An exclusive create followed by a write left a moment in which a second driver read an empty
    lock, took it for a torn one and broke it: two of six drivers racing held the lock at once (the
    suite's race test, at load). Written to a private file first, then hard-linked into place,
    which is atomic and fails if the lock exists; a filesystem without hard links falls back to
    the exclusive create."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:                    # no hard links here (some network filesystems)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    finally:
        os.unlink(tmp)


def _check_holder(raw: bytes | None) -> None:
    """UsageError when a live driver on this host holds the lock (its driver.json contents)."""
    if not raw:
        return
    try:
        info = json.loads(raw)
    except ValueError:
        return                    # torn by a kill mid-write: its writer is gone
    if info.get("host") == socket.gethostname() and pid_alive(info.get("pid", -1)):
        raise UsageError(f"a driver (pid {info['pid']}) is already running this study")


_MACHINE_LOCK = None      # held for the driver's lifetime while it runs its own Ray


def claim_machine(store: Store) -> None:
    """One embedded Ray per machine. Each `study run` without --address starts a Ray that claims
    every CPU and sizes itself to the machine's memory; two of them overcommit both, and one's
    memory monitor kills the other's workers. The second driver refuses instead, saying how to
    share: one Ray, started once, joined by both."""
    import fcntl
    global _MACHINE_LOCK
    path = Path(tempfile.gettempdir()) / f"memscale-ray-{os.getuid()}.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UsageError(f"another memscale driver ({holder}) runs its own Ray on this machine; to run "
                         f"two studies side by side, start one Ray with `ray start --head` and pass "
                         f"--address auto to each `study run`/`study resume`") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}, study {store.uri}")
    f.flush()
    _MACHINE_LOCK = f
