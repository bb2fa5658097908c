"""Ray Tune pickles its search algorithm (tuner.pkl) before the first trial: the searcher must
pickle with every sampler, whatever the live Optuna objects hold (optuna 5.1's NSGA-II sampler
holds a threading.Lock, which broke every multi-objective study)."""
from __future__ import annotations

import pickle

import pytest

from study.validate import parse_spec
from study.results import Store
from study.sweep import CellSearcher

SPEC = """\
study: pick
task: {{name: copy, n_symbols: 2, alphabet: 4, lag: 4}}
grid: {{arch: [lstm, gru]}}
search:
  d_model: {{int: [4, 16]}}
  lr: {{float: [1.0e-3, 1.0e-2], log: true}}
trials_per_cell: 3
seeds: [0, 1]
{extra}
"""


@pytest.mark.parametrize("extra", [
    "objective: [{metric: memory_length, mode: max}, {metric: train_flops, mode: min}]",   # nsga2
    "sampler: tpe", "sampler: random", "sampler: grid"])
def test_searcher_pickles_and_rebuilds_from_ground_truth(tmp_path, extra):
    spec = parse_spec(SPEC.format(extra=extra))
    (tmp_path / "pick").mkdir()
    store = Store(str(tmp_path / "pick"))
    s = CellSearcher(spec, store, {})
    first = s.suggest("ray-1")                       # asks cell 0's Optuna study once
    assert first is not None and first != CellSearcher.FINISHED
    clone = pickle.loads(pickle.dumps(s))
    # rebuilt from the journal: the slot asked above keeps its configuration, nothing else is asked
    assert clone.total() == s.total() == 2 * 3 * 2
    asked = [(x.cell.index, x.index, x.params) for x in clone.slots if x.params is not None]
    assert asked == [(s.slots[0].cell.index, 0, s.slots[0].params)]
