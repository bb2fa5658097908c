"""Grow a study: spec history, the plan of an extension, and studies from before content ids.

`ROOT/<study>/spec.yaml` is the current spec; every version is kept as `specs/0001.yaml`, ... and
listed in `specs/index.json` with its time and fingerprint (docs/design.md, "Growing a study").
A spec.yaml whose fingerprint is not the latest version's was edited by hand and is refused: its
results were produced under another spec, and a changed spec must go through `--extend`.

A study written before cell ids were content-addressed (positional `c000`, `c001`, ..., no
`specs/index.json`) keeps those ids: they are recomputed from its spec, in its grid order, and
recorded in the index (`legacy`) the first time a driver runs it.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field

from study.config import Cell, Spec, UsageError, positional_cells, spec_fingerprint
from study.validate import parse_spec
from study.identity import Wanted, study_cells

INDEX = ("specs", "index.json")


def version_file(n: int) -> str:
    return f"{n:04d}.yaml"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class History:
    versions: list[dict] = field(default_factory=list)   # {"version", "file", "time", "fingerprint", "note"?}
    legacy: dict[str, dict] = field(default_factory=dict)  # content id -> {"id": "c000", "optuna": label}
    recorded: bool = False                                 # specs/index.json exists

    @property
    def version(self) -> int | None:
        return self.versions[-1]["version"] if self.versions else None

    def to_json(self) -> bytes:
        return json.dumps({"versions": self.versions, "legacy": self.legacy}, indent=1, sort_keys=True).encode()


def _has_results(store) -> bool:
    return any(store.exists(p) for p in ("optuna.journal", "optuna.journal.d", "parquet", "checkpoints"))


def legacy_map(spec: Spec) -> dict[str, dict]:
    """A study from before content ids: its cells' positional ids and Optuna study names, as that
    code gave them (grid order of the spec it ran), keyed by content id."""
    named = study_cells(spec)
    return {n.name: {"id": p.id, "optuna": p.label} for p, n in zip(positional_cells(spec), named)}


def load_history(store, text: str | None = None) -> History:
    """The study's spec history. A folder without an index is a study from before spec history:
    its spec.yaml is version 1 (and, if it holds results, its cells keep positional ids)."""
    raw = store.read_bytes(*INDEX)
    if raw is not None:
        try:
            d = json.loads(raw)
            return History(list(d["versions"]), dict(d.get("legacy") or {}), recorded=True)
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{store.join(*INDEX)}: unreadable spec history; restore it from a backup") from None
    if text is None:
        data = store.read_bytes("spec.yaml")
        text = data.decode("utf-8", "replace") if data is not None else None
    h = History()
    if text is None:
        return h
    h.versions = [{"version": 1, "file": version_file(1), "time": _now(), "fingerprint": spec_fingerprint(text),
                   "note": "the study's spec before memscale kept spec history", "migrated": True}]
    if _has_results(store):
        h.legacy = legacy_map(parse_spec(text, store.join("spec.yaml"), check_values=False))
    return h


def check_spec(store, text: str, h: History) -> str:
    """The current spec's text; refuses a spec.yaml edited by hand (exit 2): the study's results
    were produced under the recorded versions, and a changed spec goes through `--extend`. A
    spec.yaml left at the previous version by a crash in the middle of `record` is put right."""
    if not h.recorded or not h.versions:
        return text
    latest = h.versions[-1]
    fp = spec_fingerprint(text)
    if fp == latest["fingerprint"]:
        return text
    if len(h.versions) > 1 and fp == h.versions[-2]["fingerprint"]:
        new = store.read_bytes("specs", latest["file"])
        if new is not None and spec_fingerprint(new.decode("utf-8", "replace")) == latest["fingerprint"]:
            store.write_bytes(new, "spec.yaml")      # an extension cut short after its index was written
            return new.decode("utf-8")
    raise UsageError(f"{store.join('spec.yaml')}: edited by hand (it no longer matches spec version "
                     f"{latest['version']}, specs/{latest['file']}); put that file back as spec.yaml, and grow "
                     f"the study with `study run NEW_SPEC --results ROOT --extend`")


def record(store, h: History, text: str, note: str | None = None) -> int:
    """Write `text` as the next spec version: specs/<n>.yaml, the index, then spec.yaml (a crash
    in between is put right by check_spec). A study from before spec history first gets its own
    spec recorded as version 1."""
    if not h.recorded and h.versions:
        store.write_bytes(store.read_bytes("spec.yaml") or text.encode(), "specs", h.versions[0]["file"])
    if not h.versions or h.versions[-1]["fingerprint"] != spec_fingerprint(text):
        n = (h.version or 0) + 1
        entry = {"version": n, "file": version_file(n), "time": _now(), "fingerprint": spec_fingerprint(text)}
        if note:
            entry["note"] = note
        store.write_bytes(text.encode(), "specs", entry["file"])
        h.versions.append(entry)
    store.write_bytes(h.to_json(), *INDEX)
    h.recorded = True
    store.write_bytes(text.encode(), "spec.yaml")
    return h.version


def migrate(store, h: History) -> None:
    """Record a study from before spec history (its spec as version 1, its positional ids)."""
    if not h.recorded and h.versions:
        record(store, h, (store.read_bytes("spec.yaml") or b"").decode("utf-8", "replace"))


def spec_of(store, h: History, version: dict) -> Spec | None:
    raw = store.read_bytes("specs", version["file"])
    if raw is None and version is h.versions[-1]:
        raw = store.read_bytes("spec.yaml")
    if raw is None:
        return None
    return parse_spec(raw.decode("utf-8", "replace"), store.join("specs", version["file"]), check_values=False)


def every_cell(store, h: History) -> dict[str, tuple[Cell, int]]:
    """Every cell any version of the spec had: id -> (cell, the last version that had it)."""
    out: dict[str, tuple[Cell, int]] = {}
    for v in h.versions:
        spec = spec_of(store, h, v)
        if spec is not None:
            for c in study_cells(spec, h.legacy):
                out[c.id] = (c, v["version"])
    return out


# ---- the plan of an extension ----------------------------------------------------------------

@dataclass
class Plan:
    kept: list[Cell]
    added: list[Cell]
    dropped: list[Cell]
    done: int            # trials the new spec needs that are finished already
    new: int             # trials to run from scratch
    continued: int       # trials to continue from a shorter budget's final checkpoint
    steps: int

    @property
    def to_run(self) -> int:
        return self.new + self.continued

    def lines(self, study: str, v_from: int | None, v_to: int | None) -> list[str]:
        head = f"study {study}: grow from spec version {v_from} to {v_to}" if v_to != v_from else \
            f"study {study}: spec version {v_from}, unchanged"
        out = [head, f"  cells: {len(self.kept)} kept, {len(self.added)} added, {len(self.dropped)} dropped "
                     f"(dropped cells' results are kept and stay queryable)"]
        out += [f"  + {c.id}  {c.label}" for c in self.added]
        out += [f"  - {c.id}  {c.label}" for c in self.dropped]
        cont = f", {self.continued} to continue to {self.steps} steps from their final checkpoint" if self.continued else ""
        out.append(f"  trials: {self.done + self.to_run} in the spec, {self.done} finished, "
                   f"{self.new} to run{cont}")
        return out


def make_plan(old: Spec | None, new: Spec, legacy: dict, finished: dict[str, dict]) -> Plan:
    """Compare the current spec with a new one: cells kept, added, dropped, and the trials the new
    one runs (the finished trials: trial id -> trials row)."""
    was = {c.id: c for c in study_cells(old, legacy)} if old is not None else {}
    now = study_cells(new, legacy)
    ids = {c.id for c in now}
    want = Wanted(new.budget, finished)
    done = fresh = cont = 0
    for c in now:
        for k in range(new.trials_per_cell):
            for s in new.seeds:
                tid, source = want.want(c.id, k, s)
                if tid in finished:
                    done += 1
                elif source:
                    cont += 1
                else:
                    fresh += 1
    return Plan(kept=[c for c in now if c.id in was], added=[c for c in now if c.id not in was],
                dropped=[c for i, c in was.items() if i not in ids], done=done, new=fresh, continued=cont,
                steps=new.budget.steps)


def refuse_if_running(store) -> None:
    """A driver running this study would go on with the old spec under the new one's name."""
    from study.results import pid_alive
    raw = store.read_bytes("driver.json")
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        info = {}
    if info and info.get("host") == socket.gethostname() and pid_alive(info.get("pid", -1)):
        raise UsageError(f"{store.uri}: a driver (pid {info['pid']}) is running this study; stop it, then extend")


def contributed(store) -> list[tuple[int | None, int]]:
    """(spec version, trials) for the trials table; None: rows from before spec versions were recorded."""
    counts: dict = {}
    for r in store.trial_rows(["spec_version"]):
        counts[r["spec_version"]] = counts.get(r["spec_version"], 0) + 1
    return sorted(counts.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0))
