"""The cost preview (`study run --dry-run`), the calibration file (`study calibrate`) and the
report's predicted-vs-measured section.

FLOPs are checked against what real trials record (`train_flops`, `params`, `state_size`): in
process for a fixed configuration stopped by max_flops, and through a real Ray sweep with a
searched d_model (slow). Time: interpolation on a synthetic calibration file with known rates,
the "not calibrated" fallback, and malformed files (one stderr line, exit 2, nothing written).
Every test points XDG_CACHE_HOME at a temporary folder: the user's real cache is never touched.
"""
from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest

from study import cost
from study.calibrate import Calibration, CalibrationError, default_path, load
from study.config import cells, given_values
from study.models import build_model
from study.registry import IO, MODELS
from study.train import train
from study.validate import parse_spec
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


FIXED = """\
study: fixed
task: {name: copy, n_symbols: 2, alphabet: 4}
grid: {arch: [lstm, transformer], lag: [4]}
search: {lr: {float: [1.0e-3, 1.0e-2], log: true}}
fixed: {d_model: 8, batch_size: 4, eval_batch: 4}
trials_per_cell: 1
seeds: [0, 1]
budget: {steps: 25, eval_every: 10, max_flops: %g}
"""


def test_meta_build_counts_equal_a_real_build(monkeypatch):
    """The preview builds large models on the meta device; every family must count the same there."""
    monkeypatch.setattr(cost, "SMALL_MODEL", 0)
    cost._model_counts.cache_clear()
    io = IO(d_out=6, vocab_size=6)
    for arch in MODELS.names():
        cfg = MODELS.get(arch).config(d_model=16, n_layers=2)
        real = build_model(arch, cfg, io, 24, None)
        counts = cost._model_counts(arch, cfg, io, 24, None, (24, 48))
        assert counts == (real.flops_per_token(24, None), (real.flops_per_token(24, None), real.flops_per_token(48, None)),
                          real.num_params(), real.state_size(24, None)), arch


def test_preview_flops_equal_what_trials_record_for_a_fixed_configuration():
    """Two archs x two seeds, stopped by max_flops mid-way (not at a multiple of eval_every):
    the preview's cell totals are exactly the sum of the trials' train_flops, and its params and
    state size are the trials' own; the number of evaluations matches the reports."""
    probe = parse_spec(FIXED % 1e30)
    per_step = {c.label: cost.preview(probe, cost.Rates(None))[c.index].mid.train_flops / 25 for c in cells(probe)}
    spec = parse_spec(FIXED % (per_step["arch=lstm,lag=4"] * 16.5))      # lstm stops at step 17
    got = cost.preview(spec, cost.Rates(None))
    for cc in got:
        assert cc.low.train_flops == cc.mid.train_flops == cc.high.train_flops      # lr does not change cost
        recorded, reports = 0.0, []
        for seed in spec.seeds:
            out = train({**given_values(spec, cc.cell, {"lr": 1e-3}), "seed": seed}, spec.budget,
                        lambda m, c, k: reports.append(m))
            recorded += out["train_flops"]
            assert (out["params"], out["state_size"]) == (cc.mid.params, cc.mid.state_size)
        assert recorded == pytest.approx(cc.total("train_flops"), rel=1e-12)
        steps = out["steps"]
        assert steps < spec.budget.steps and steps == round(cc.mid.train_flops / per_step[cc.cell.label])
        assert len(reports) == len(spec.seeds) * ((steps - 1) // spec.budget.eval_every + 1)
        if cc.arch == "lstm":
            assert steps == 17


def synthetic_calibration(path, rates: dict) -> None:
    """lstm on cpu at d_model {16, 64} x seq_len {16, 256}; flops_per_token 1, so the achieved
    FLOP/s of a point is 3 x tokens_per_s: rates are given as FLOP/s."""
    pts = [{"device": "cpu", "device_name": "test", "arch": "lstm", "d_model": d, "seq_len": t, "threads": 1,
            "batch_size": 8, "tokens_per_s": r / 3, "flops_per_token": 1.0} for (d, t), r in rates.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "points": pts}))


RATES = {(16, 16): 1e9, (64, 16): 4e9, (16, 256): 2e9, (64, 256): 8e9}


def test_interpolation_on_a_synthetic_calibration(tmp_path, study):
    path = tmp_path / "cal.json"
    synthetic_calibration(path, RATES)
    cal = load(path)
    # at a point: that point; at the log-midpoint of both axes: the geometric mean of the four
    assert cal.rate("cpu", "lstm", 64, 16)[1] == pytest.approx(4e9)
    assert cal.rate("cpu", "lstm", 32, 64)[1] == pytest.approx((1 * 4 * 2 * 8) ** 0.25 * 1e9)
    # halfway along d_model at seq_len 16: log-linear between 1e9 and 4e9
    assert cal.rate("cpu", "lstm", 32, 16)[1] == pytest.approx(2e9)
    # outside the measured range: the nearest edge's rate, not an extrapolated slope
    assert cal.rate("cpu", "lstm", 1024, 4096)[1] == pytest.approx(8e9)
    assert cal.rate("cpu", "lstm", 8, 16)[1] == pytest.approx(1e9)
    assert cal.rate("cpu", "gru", 32, 64) is None and cal.rate("cuda", "lstm", 32, 64) is None
    # a ragged grid (one corner missing): the nearest point
    ragged = Calibration(path, [p for p in cal.points if (p.d_model, p.seq_len) != (64, 256)])
    assert ragged.rate("cpu", "lstm", 60, 200)[1] == pytest.approx(2e9)

    # through the preview: a trial's seconds are its FLOPs over the interpolated rate
    spec = parse_spec("study: s\ntask: {name: copy, n_symbols: 2}\ngrid: {arch: [lstm, gru], lag: [4]}\n"
                      "fixed: {seq_len: 64, batch_size: 4, eval_batch: 4}\nsearch: {d_model: {int: [16, 64], log: true}}\n"
                      "budget: {steps: 10, eval_every: 5}\n")
    lstm, gru = cost.preview(spec, cost.Rates(cal))
    assert lstm.mid.values == {"d_model": 32} and lstm.mid.source == "calibrated"
    assert lstm.mid.train_s == pytest.approx(lstm.mid.train_flops / ((1 * 4 * 2 * 8) ** 0.25 * 1e9))
    assert lstm.low.train_s == pytest.approx(lstm.low.train_flops / (1e9 * 2 ** 0.5))     # d 16, seq 64
    assert lstm.low.values == {"d_model": 16} and lstm.high.values == {"d_model": 64}
    assert gru.mid.source == "fallback"

    code, out, _ = study("run", str(write(tmp_path, spec_text(spec))), "--dry-run", "--calibration", str(path),
                         "--price-per-cpu-hour", "0.5")
    assert code == 0
    assert f"time from calibration {path}" in out
    assert ("lstm on cpu: d_model=16,seq_len=16; d_model=16,seq_len=256; d_model=64,seq_len=16; "
            "d_model=64,seq_len=256") in out
    assert "not calibrated: gru on cpu" in out and "has no points for them" in out
    assert "bill at $0.5 per CPU-hour: $" in out


@pytest.fixture
def study(capsys):
    """The `study` command in process: (exit code, stdout, stderr)."""
    from study.cli import main

    def call(*args):
        capsys.readouterr()
        code = main(list(args))
        o = capsys.readouterr()
        return code, o.out, o.err
    return call


def write(tmp_path, text: str):
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def spec_text(spec) -> str:
    import yaml
    return yaml.safe_dump(spec.model_dump(exclude_defaults=True))


def test_not_calibrated_falls_back_to_mfu_times_peak(tmp_path, private_cache, study):
    spec = parse_spec(FIXED % 1e30)
    assert not default_path().exists() and str(default_path()).startswith(str(private_cache))
    lstm = cost.preview(spec, cost.Rates(load()))[0]          # no file in the cache: None
    assert lstm.mid.source == "fallback"
    assert lstm.mid.seconds == pytest.approx((lstm.mid.train_flops + lstm.mid.eval_flops)
                                             / (cost.MFU * cost.PEAK_FLOPS["cpu"]))
    code, out, _ = study("run", str(write(tmp_path, FIXED % 1e30)), "--dry-run", "--mfu", "0.2")
    assert code == 0
    assert "not calibrated: lstm on cpu, transformer on cpu (no calibration file; run `study calibrate`)" in out
    assert "0.2 MFU x peak" in out and "cost per cell" in out and "total: 4 trials" in out
    assert not private_cache.exists()                      # a dry run writes nothing


MALFORMED = [
    ("{not json", "line 1: malformed JSON"),
    ('{"version": 1, "points": {}}', "points: expected an object with a list 'points'"),
    ('{"version": 7, "points": []}', "version: expected 1, found 7"),
    ('{"version": 1, "points": [{"device": "cpu", "arch": "lstm", "d_model": 16, "seq_len": 16, "threads": 1, '
     '"batch_size": 8, "tokens_per_s": -5, "flops_per_token": 1}]}', "points[0].tokens_per_s: expected a positive number"),
    ('{"version": 1, "points": [{"device": "tpu", "arch": "lstm", "d_model": 16, "seq_len": 16, "threads": 1, '
     '"batch_size": 8, "tokens_per_s": 5, "flops_per_token": 1}]}', "points[0].device: expected cpu or cuda"),
    ('{"version": 1, "points": [{"device": "cpu", "arch": "lstm", "d_model": 16.5}]}',
     "points[0].d_model: expected a positive whole number"),
]


@pytest.mark.parametrize("text,message", MALFORMED)
def test_malformed_calibration_is_named_in_one_line(tmp_path, text, message):
    p = tmp_path / "cal.json"
    p.write_text(text)
    with pytest.raises(CalibrationError) as e:
        load(p)
    assert str(e.value).startswith(f"{p}: {message}") and "\n" not in str(e.value)


def test_malformed_calibration_exits_2_and_writes_nothing(tmp_path, private_cache, study):
    default_path().parent.mkdir(parents=True)
    default_path().write_text('{"version": 1, "points": [3]}')
    spec = write(tmp_path, FIXED % 1e30)
    r = run_cli("run", str(spec), "--results", str(tmp_path / "results"))     # the real entry point
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"{default_path()}: points[0]: expected an object\n"
    assert not (tmp_path / "results").exists()
    assert study("run", str(spec), "--dry-run") == (2, "", f"{default_path()}: points[0]: expected an object\n")
    code, out, err = study("run", str(spec), "--dry-run", "--calibration", str(tmp_path / "missing.json"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "no such calibration file" in err


def test_calibrate_writes_a_file_the_dry_run_reads(tmp_path, private_cache, study):
    code, out, _ = study("calibrate", "--archs", "lstm", "--d-models", "8", "--seq-lens", "16", "--steps", "1")
    assert code == 0 and out.strip().endswith(f"wrote {default_path()}")
    cal = load()                                            # the default path, inside the temp cache
    assert cal.path == str(default_path()) and str(private_cache) in cal.path
    (p,) = cal.points
    assert (p.arch, p.d_model, p.seq_len, p.device, p.threads) == ("lstm", 8, 16, "cpu", 1)
    counts = cost._model_counts("lstm", MODELS.get("lstm").config(d_model=8), IO(d_out=10, vocab_size=10), 16, None, ())
    assert p.flops_per_token == counts[0] and p.tokens_per_s > 0
    code, _, err = study("calibrate", "--archs", "nope")
    assert code == 2 and err.startswith("study calibrate: --archs: unknown arch 'nope' (valid: ")
    code, out, _ = study("run", str(write(tmp_path, FIXED % 1e30)), "--dry-run")
    assert code == 0 and f"time from calibration {default_path()}" in out and "lstm on cpu: d_model=8,seq_len=16" in out


SEARCHED = """\
study: searched
task: {name: copy, n_symbols: 2, alphabet: 4}
grid: {arch: [lstm], lag: [4, 8]}
search:
  d_model: {choice: [8, 16]}
  lr: {float: [1.0e-3, 1.0e-2], log: true}
fixed: {batch_size: 4, eval_batch: 4}
trials_per_cell: 2
sampler: random
budget: {steps: 12, eval_every: 6}
resources: {cpu: 1}
"""


@pytest.mark.slow
def test_real_sweep_records_what_the_preview_said_and_report_compares(tmp_path):
    """A real Ray sweep with a searched d_model: every trial's train_flops, params and state size
    are the preview's numbers for the d_model it ran; each cell's sum lies in the preview's range;
    the run stored prediction.json and `study report` puts predicted against measured time."""
    spec_path = write(tmp_path, SEARCHED)
    r = run_cli("run", str(spec_path), "--results", str(tmp_path / "res"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    spec = parse_spec(SEARCHED)
    folder = tmp_path / "res" / "searched"
    stored = json.loads((folder / "prediction.json").read_text())
    rows = pq.read_table(folder / "parquet" / "trials").to_pylist()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    previews = {c.cell.label: c for c in cost.preview(spec, cost.Rates(None))}
    for label, cc in previews.items():
        mine = [r for r in rows if r["cell"] == label]
        by_d = {t.values["d_model"]: t for t in (cc.low, cc.high)}
        for row in mine:
            want = by_d[row["d_model"]]
            assert (row["train_flops"], row["params"], row["state_size"]) == (want.train_flops, want.params, want.state_size)
        total = sum(r["train_flops"] for r in mine)
        assert cc.total("train_flops", "low") <= total <= cc.total("train_flops", "high")
        s = next(c for c in stored["cells"] if c["cell"] == label)
        assert (s["low"]["train_flops"], s["high"]["train_flops"]) == (cc.low.train_flops, cc.high.train_flops)
    r = run_cli("report", str(folder))
    assert r.returncode == 0, r.stderr
    page = (folder / "report" / "report.html").read_text()
    assert "Predicted vs measured time" in page and 'id="prediction"' in page
    assert (folder / "report" / "predicted_vs_measured.png").stat().st_size > 1000
    with open(folder / "report" / "prediction.csv") as f:
        got = list(csv.DictReader(f))
    assert len(got) == 4 and {g["source"] for g in got} == {"fallback"}
    for g in got:       # the report's prediction is the preview's, at the trial's own d_model
        row = next(r for r in rows if r["trial_id"] == g["trial_id"])
        want = next(t for t in (previews[row["cell"]].low, previews[row["cell"]].high) if t.values["d_model"] == row["d_model"])
        assert float(g["predicted_s"]) == pytest.approx(want.seconds)
        assert float(g["measured_train_s"]) == pytest.approx(row["wall_s"]) and float(g["measured_s"]) >= row["wall_s"]
