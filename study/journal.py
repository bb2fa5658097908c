"""The Optuna journal of a study, kept where the study is: in the study folder, or on remote
storage as append-only parts.

Why a module of its own: Optuna's JournalFileBackend needs a local file, and a study on S3 or GCS
must resume from another machine with the same Optuna studies. This module keeps that file and
its remote copy in step (pull at start-up, push after every tell, mend a record torn by a kill);
study/sweep.py only asks and tells.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from study.results import Store


class Journal:
    """The Optuna journal file. JournalFileBackend needs a local file: a local (or NFS) study keeps
    it in the study folder; a remote one works on a local copy, so a resume from another machine
    continues the same Optuna studies. The journal only ever grows, so a push uploads just the
    bytes appended since the last one, as one more part `optuna.journal.d/<start>-<end>`: O(n)
    bytes over a study instead of the whole file after every tell. Every CHUNK parts (and at the
    end of a run) are merged into one chunk, so a start-up reads O(n / CHUNK) objects. A pull
    follows the parts from byte 0, taking the longest piece at each offset; pieces a merge already
    covers (a crash before it deleted them) are skipped and deleted."""

    DIR = "optuna.journal.d"
    CHUNK = 1000

    def __init__(self, store: Store):
        self.store = store
        self.pushed = 0
        self.parts: list[tuple[int, int]] = []      # pushed by this driver since its last merge
        if store.local:
            self.path = store.join("optuna.journal")
        else:
            cache = Path(tempfile.mkdtemp(prefix="memscale-optuna-"))
            self.path = str(cache / "optuna.journal")
            data = self._pull()
            Path(self.path).write_bytes(data)
            self.pushed = len(data)
        kept = self.mend()
        if kept is not None and not store.local:
            self._cut_remote(kept)

    def _cut_remote(self, end: int) -> None:
        """The pulled copy lost a torn record: the remote parts must lose it too, or the next push
        would append after bytes the local copy no longer has. One chunk [0, end) goes up first,
        then every piece reaching past `end` is deleted (a crash in between: the next pull takes
        the longer, torn piece again and this repeats)."""
        if end:
            self._put(0, end)
        for (a, b), name in self._pieces().items():
            if b > end:
                self.store.delete(self.DIR, name) if name else self.store.delete("optuna.journal")
        self.pushed, self.parts = end, []

    def mend(self) -> int | None:
        """Cut a torn last record (a kill mid-write) back to the last complete one. Optuna reads
        the journal as one JSON record per line and fails on a partial line, on every resume.
        Returns the length kept when it cut, else None."""
        p = Path(self.path)
        if not p.exists():
            return
        data = p.read_bytes()
        keep = len(data)
        while keep:
            start = data.rfind(b"\n", 0, keep - 1) + 1
            line = data[start:keep]
            try:
                if line.endswith(b"\n"):
                    json.loads(line)
                    break
            except ValueError:
                pass
            keep = start
        if keep < len(data):
            p.write_bytes(data[:keep])
            print(f"warning: {p}: cut a torn record ({len(data) - keep} bytes) from the end; "
                  "its trial will be asked again", file=sys.stderr)
            return keep
        return None

    def _pieces(self) -> dict[tuple[int, int], str]:
        import pyarrow.fs as pafs
        out = {}
        for i in self.store.fs.get_file_info(pafs.FileSelector(self.store.join(self.DIR), allow_not_found=True)):
            a, _, b = i.base_name.partition("-")
            if a.isdigit() and b.isdigit():
                out[(int(a), int(b))] = i.base_name
        legacy = self.store.fs.get_file_info(self.store.join("optuna.journal"))   # one file, before parts
        if legacy.type == pafs.FileType.File and legacy.size:
            out.setdefault((0, legacy.size), "")
        return out

    def _pull(self) -> bytes:
        pieces = self._pieces()
        chunks, pos = [], 0
        while True:
            nxt = max((p for p in pieces if p[0] == pos), key=lambda p: p[1], default=None)
            if nxt is None:
                break
            name = pieces.pop(nxt)
            data = self.store.read_bytes(self.DIR, name) if name else self.store.read_bytes("optuna.journal")
            if data is None or len(data) != nxt[1] - nxt[0]:
                break
            chunks.append(data)
            pos = nxt[1]
        for (a, b), name in pieces.items():        # covered by a merged chunk: left by a crash
            if name and b <= pos:
                self.store.delete(self.DIR, name)
        return b"".join(chunks)

    def _put(self, start: int, end: int) -> None:
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        self.store.write_bytes(data, self.DIR, f"{start:016d}-{end:016d}")

    def push(self, final: bool = False) -> None:
        if self.store.local:
            return
        end = os.path.getsize(self.path)
        if end > self.pushed:
            self._put(self.pushed, end)
            self.parts.append((self.pushed, end))
            self.pushed = end
        if len(self.parts) >= self.CHUNK or (final and len(self.parts) > 1):
            self._put(self.parts[0][0], self.parts[-1][1])     # the merged chunk first, then the parts go
            for a, b in self.parts:
                self.store.delete(self.DIR, f"{a:016d}-{b:016d}")
            self.parts = []
