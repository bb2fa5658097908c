"""Every value a search can sample is valid (issue "Trustworthy memory length", item 2): the spec
loader builds every configuration each cell can reach and refuses the spec when one is invalid,
so a study never loses trials to `error` for a configuration it could have been told was wrong."""
from __future__ import annotations

import pytest
import ray
import yaml

from study.config import SpecError, cells
from study.results import Store
from study.sweep import run_study
from study.validate import parse_spec
from tests.conftest import ROOT
from tests.test_shipped_specs import cut

FULL = ["memory_per_compute", "truncation", "text_context"]


@pytest.mark.parametrize("name", FULL)
def test_full_specs_validate_and_their_old_ranges_are_refused(name):
    text = (ROOT / "search_spaces" / f"{name}.yaml").read_text()
    parse_spec(text, f"{name}.yaml")
    raw = yaml.safe_load(text)
    lo, hi = min(raw["search"]["d_model"]["choice"]), max(raw["search"]["d_model"]["choice"])
    raw["search"]["d_model"] = {"int": [lo, hi], "log": True}      # what they said before
    with pytest.raises(SpecError) as e:
        parse_spec(yaml.safe_dump(raw), f"{name}.yaml")
    msg = str(e.value)
    assert f"{name}.yaml: search.d_model:" in msg and "not divisible by n_heads" in msg
    assert "\n" not in msg


def test_a_step_samples_only_valid_values():
    text = (ROOT / "search_spaces" / "memory_per_compute.yaml").read_text()
    raw = yaml.safe_load(text)
    raw["search"]["d_model"] = {"int": [32, 512], "step": 4}
    parse_spec(yaml.safe_dump(raw), "s.yaml")
    raw["search"]["d_model"] = {"int": [32, 512], "step": 2}          # 34 is not divisible by 4
    with pytest.raises(SpecError, match=r"search.d_model: d_model=34 can be sampled"):
        parse_spec(yaml.safe_dump(raw), "s.yaml")


def test_the_high_end_of_a_range_is_checked():
    raw = yaml.safe_load((ROOT / "search_spaces" / "truncation_quick.yaml").read_text())
    raw.setdefault("search", {})["window"] = {"int": [2, 100_000]}
    raw["grid"].pop("window")
    with pytest.raises(SpecError, match=r"search.window: window=\d+ can be sampled and is invalid: window \d+ is "
                                        r"larger than seq_len"):
        parse_spec(yaml.safe_dump(raw), "s.yaml")


def test_every_choice_is_checked_not_only_the_first():
    raw = yaml.safe_load((ROOT / "search_spaces" / "memory_per_compute.yaml").read_text())
    raw["search"]["d_model"] = {"choice": [16, 48, 50]}
    with pytest.raises(SpecError, match=r"search.d_model: d_model=50 .* not divisible by n_heads 4"):
        parse_spec(yaml.safe_dump(raw), "s.yaml")


@pytest.mark.slow
def test_full_search_ranges_run_without_error_trials(tmp_path):
    """The full memory_per_compute spec's d_model search, on its attention archs, in a real sweep
    cut to two steps: random sampling draws several sizes, none of which may end in `error`."""
    full = yaml.safe_load((ROOT / "search_spaces" / "memory_per_compute.yaml").read_text())
    raw = yaml.safe_load(cut((ROOT / "search_spaces" / "memory_per_compute_quick.yaml").read_text()))
    raw["grid"] = {"arch": ["transformer", "linear_transformer"], "task": ["copy"], "lag": [8]}
    raw["search"] = {"d_model": full["search"]["d_model"], "n_layers": {"int": [1, 2]}}
    for k in raw["search"]:
        raw["fixed"].pop(k, None)                           # a parameter is set in one place only
    raw.update(trials_per_cell=3, sampler="random", max_concurrent=2)
    text = yaml.safe_dump(raw)
    spec = parse_spec(text, "cut.yaml")
    store = Store(str(tmp_path / spec.study))
    store.write_bytes(text.encode(), "spec.yaml")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        assert run_study(spec, store) == 0
    finally:
        ray.shutdown()
    rows = store.trial_rows()
    assert len(rows) == len(cells(spec)) * 3
    assert {r["status"] for r in rows} <= {"completed", "oom"}, [r["error"] for r in rows]
    assert len({r["d_model"] for r in rows}) > 1          # it did sample different sizes
