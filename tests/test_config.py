"""Spec validation: every bad input is one line naming the file and key, exit 2, nothing written."""
from __future__ import annotations

from pathlib import Path

import pytest

from study.cli import main
from study.config import SpecError, cells, given_values, resolve
from study.validate import load_spec, parse_spec
from tests.conftest import ROOT, TINY, run_cli

GOOD = TINY.format(name="t")


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(text, "s.yaml")
    return str(e.value)


def test_smoke_spec_is_valid_and_has_every_cell():
    spec = load_spec(ROOT / "search_spaces" / "smoke.yaml")
    labels = [c.label for c in cells(spec)]
    assert len(labels) == 6 and "arch=tcn,lag=32,window=full" in labels
    assert spec.trials_per_cell == 2


def test_every_shipped_spec_validates():
    for p in sorted((ROOT / "search_spaces").glob("*.yaml")):
        load_spec(p)


@pytest.mark.parametrize("text, key, words", [
    (GOOD + "bogus: 1\n", "bogus", "unknown key"),
    (GOOD.replace("d_model: 16", "d_modle: 16"), "fixed.d_modle", "unknown parameter"),
    (GOOD.replace("arch: [lstm]", "arch: [lstm, lsmt]"), "grid.arch", "valid: "),
    (GOOD.replace("name: copy", "name: cpoy"), "task", "valid: "),
    (GOOD.replace("[1.0e-3, 1.0e-2]", "[1.0e-2, 1.0e-3]"), "search.lr.float", "wrong way round"),
    (GOOD.replace("lag: [4]", "lag: [4]\n  window: [100]"), "grid.window", "larger than seq_len"),
    (GOOD.replace("d_model: 16", "d_model: sixteen"), "fixed.d_model", "integer"),
    (GOOD.replace("trials_per_cell: 2", "trials_per_cell: 0"), "trials_per_cell", "greater than"),
])
def test_bad_spec_is_one_line_naming_file_and_key(text, key, words):
    msg = error_of(text)
    assert "\n" not in msg
    assert msg.startswith("s.yaml: ") and f" {key}" in msg and words in msg


def test_unknown_arch_lists_the_valid_names():
    msg = error_of(GOOD.replace("arch: [lstm]", "arch: [lsmt]"))
    assert "lstm" in msg and "transformer" in msg and "tcn" in msg


def test_malformed_yaml_names_the_line():
    msg = error_of("study: x\ngrid: [unclosed\n")
    assert msg.startswith("s.yaml: line ") and "malformed YAML" in msg


def test_missing_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml: no such file" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("bad", [
    GOOD + "bogus: 1\n",
    GOOD.replace("arch: [lstm]", "arch: [lsmt]"),
    GOOD.replace("[1.0e-3, 1.0e-2]", "[1.0e-2, 1.0e-3]"),
    "study: x\ngrid: [unclosed\n",
])
def test_cli_bad_spec_exits_2_without_traceback_or_results(tmp_path, bad):
    spec = tmp_path / "bad.yaml"
    spec.write_text(bad)
    r = run_cli("run", str(spec), "--results", str(tmp_path / "r"), timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(spec) in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_folder_holding_another_study_is_refused(tmp_path, capsys):
    spec = tmp_path / "a.yaml"
    spec.write_text(GOOD)
    other = tmp_path / "r" / "t"
    other.mkdir(parents=True)
    (other / "spec.yaml").write_text(GOOD.replace("trials_per_cell: 2", "trials_per_cell: 3"))
    assert main(["run", str(spec), "--results", str(tmp_path / "r")]) == 2
    assert "different spec" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["spec.yaml"]   # nothing written
    (other / "spec.yaml").write_text(GOOD)
    assert main(["run", str(spec), "--results", str(tmp_path / "r")]) == 2
    assert "study resume" in capsys.readouterr().err


def test_folder_that_is_not_a_study_is_refused(tmp_path, capsys):
    spec = tmp_path / "a.yaml"
    spec.write_text(GOOD)
    (tmp_path / "r" / "t").mkdir(parents=True)
    (tmp_path / "r" / "t" / "thesis.tex").write_text("mine")
    assert main(["run", str(spec), "--results", str(tmp_path / "r")]) == 2
    assert "not a memscale study folder" in capsys.readouterr().err


def test_dry_run_prints_cells_and_count(capsys):
    assert main(["run", str(ROOT / "search_spaces" / "smoke.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 cells x 2 trials x 1 seeds = 12 trials" in out and "arch=lstm,lag=8,window=full" in out


def test_unused_parameter_is_not_passed_and_recorded_null():
    spec = parse_spec(GOOD.replace("arch: [lstm]", "arch: [lstm, transformer]")
                      .replace("d_model: 16", "d_model: 16, n_heads: 2"), "s.yaml")
    by_arch = {}
    for c in cells(spec):
        r = resolve(given_values(spec, c, {"lr": 1e-3}))
        by_arch[r.arch] = r
    assert by_arch["transformer"].model.n_heads == 2
    assert "n_heads" in by_arch["lstm"].unused and not hasattr(by_arch["lstm"].model, "n_heads")


def test_full_window_is_null():
    spec = parse_spec(GOOD.replace("lag: [4]", "lag: [4]\n  window: [full, 4]"), "s.yaml")
    assert [dict(c.values)["window"] for c in cells(spec)] == [None, 4]


def test_list_shows_archs_and_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("lstm", "transformer", "tcn", "copy"):
        assert f"  {name} " in out


def test_per_arch_resources():
    spec = parse_spec(GOOD.replace("arch: [lstm]", "arch: [lstm, transformer]")
                      + "resources: {cpu: 1, gpu: 0.25, per_arch: {transformer: {cpu: 2, gpu: 1}}}\n", "s.yaml")
    assert spec.resources.for_arch("transformer").gpu == 1 and spec.resources.for_arch("lstm").gpu == 0.25
    msg = error_of(GOOD + "resources: {per_arch: {transfomer: {gpu: 1}}}\n")
    assert "resources.per_arch.transfomer" in msg and "valid: " in msg
