"""Every quick study that FINDINGS.md quotes runs end to end, every cell, with its budget cut to a
couple of steps, so a shipped spec never rots."""
from __future__ import annotations

import ray
import yaml
import pytest

from study.config import cells
from study.results import Store
from study.sweep import run_study
from study.validate import parse_spec
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
QUICK = sorted((ROOT / "search_spaces").glob("*_quick.yaml"))


def cut(text: str) -> str:
    raw = yaml.safe_load(text)
    raw["budget"] = {"steps": 2, "eval_every": 2}
    raw["trials_per_cell"] = 1
    raw["seeds"] = raw.get("seeds", [0])[:1]
    raw.pop("scheduler", None)
    # small evaluations: sequences per ladder lag, and characters per context length for text
    small = {"eval_batch": 2, "eval_chars": 8}
    task = raw.get("task") if isinstance(raw.get("task"), dict) else {}
    for k in [k for k in small if k in task]:      # a parameter is set in one place only
        task[k] = small.pop(k)
    raw["fixed"] = {**raw.get("fixed", {}), **small}
    return yaml.safe_dump(raw)


def test_there_is_a_quick_study_per_claim():
    assert len(QUICK) == 6
    for p in QUICK:
        assert (p.parent / p.name.replace("_quick", "")).exists(), f"{p.name} has no full-size version"
        first = p.read_text().splitlines()[0]
        assert first.startswith("# Claim "), f"{p.name}: the first comment states the claim"


def test_every_quick_study_runs_every_cell(tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for p in QUICK:
            spec = parse_spec(cut(p.read_text()), str(p))
            store = Store(str(tmp_path / spec.study))
            store.write_bytes(p.read_bytes(), "spec.yaml")
            assert run_study(spec, store) == 0, p.name
            rows = store.trial_rows()
            assert len(rows) == len(cells(spec)), p.name
            bad = [(r["cell"], r["status"], r["error"]) for r in rows if r["status"] not in ("completed", "oom")]
            assert not bad, f"{p.name}: {bad[:3]}"
    finally:
        ray.shutdown()
