"""Hostile input: a table of malformed specs, arguments and folders, each of which must end in
exit 2, one stderr line naming the file (or argument) and the key, no traceback, and nothing
written anywhere. Most run the CLI in-process (fast); a few through the real console command."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from study.cli import main
from tests.conftest import run_cli

BASE = """\
study: h
task: {name: copy, n_symbols: 2, alphabet: 4}
grid:
  arch: [lstm]
  lag: [4]
search:
  lr: {float: [1.0e-3, 1.0e-2], log: true}
fixed: {d_model: 16, batch_size: 8, eval_batch: 8}
trials_per_cell: 2
budget: {steps: 20, eval_every: 10}
"""


def sub(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


def add(extra: str) -> str:
    return BASE + extra


def search(line: str) -> str:
    return sub("  lr: {float: [1.0e-3, 1.0e-2], log: true}\n", f"  lr: {{float: [1.0e-3, 1.0e-2], log: true}}\n  {line}\n")


def fixed(extra: str) -> str:
    text = sub("eval_batch: 8}", f"eval_batch: 8, {extra}}}")
    if extra.startswith("lr:"):
        text = text.replace("search:\n  lr: {float: [1.0e-3, 1.0e-2], log: true}\n", "")
    return text


ATTN = sub("arch: [lstm]", "arch: [lstm, transformer]")
ALIAS3 = ("study: h\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
          "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n")
BOMB5 = (ALIAS3 + "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
         "search: {d_model: {choice: *e}}\n")
SMALL_BOMB = BASE.replace("  lr: {float", "  d_model: {choice: [16, &a [16, 16, 16, 16, 16, 16, 16, 16], "
                          "&b [*a, *a, *a, *a, *a, *a, *a, *a], *b, *b, *b]}\n  lr: {float").replace("d_model: 16, ", "")

# (case id, spec text, the key the error line must name)
SPECS = [
    # reaching outside the results folder: the study name is a plain folder name
    ("name-dotdot", sub("study: h", 'study: ".."'), "study"),
    ("name-dot", sub("study: h", 'study: "."'), "study"),
    ("name-slash", sub("study: h", "study: a/b"), "study"),
    ("name-up", sub("study: h", 'study: "../x"'), "study"),
    ("name-abs", sub("study: h", "study: /etc"), "study"),
    ("name-long", sub("study: h", "study: " + "x" * 300), "study"),
    ("name-hidden", sub("study: h", "study: .hidden"), "study"),
    ("name-empty", sub("study: h", 'study: ""'), "study"),
    ("name-space", sub("study: h", "study: a b"), "study"),
    ("name-tilde", sub("study: h", "study: ~x"), "study"),
    ("name-newline", sub("study: h", 'study: "a\\nb"'), "study"),
    ("name-int", sub("study: h", "study: 5"), "study"),
    ("name-null", sub("study: h", "study: null"), "study"),
    ("name-list", sub("study: h", "study: [a]"), "study"),
    ("name-missing", sub("study: h\n", ""), "study"),
    ("name-quote", sub("study: h", "study: \"x'); DROP\""), "study"),
    # seeds
    ("seeds-dup", add("seeds: [0, 0]\n"), "seeds"),
    ("seeds-negative", add("seeds: [-1]\n"), "seeds"),
    ("seeds-float", add("seeds: [1.5]\n"), "seeds"),
    ("seeds-bool", add("seeds: [true]\n"), "seeds"),
    ("seeds-empty", add("seeds: []\n"), "seeds"),
    ("seeds-str", add("seeds: '0'\n"), "seeds"),
    ("seeds-huge", add("seeds: [99999999999]\n"), "seeds"),
    # duplicates that would share one Optuna study or be silently last-wins
    ("grid-dup-arch", sub("arch: [lstm]", "arch: [lstm, lstm]"), "grid.arch"),
    ("grid-dup-window", add("").replace("lag: [4]", "lag: [4]\n  window: [full, null]"), "grid.window"),
    ("grid-dup-lag", sub("lag: [4]", "lag: [4, 8, 4]"), "grid.lag"),
    ("dup-key-top", add("trials_per_cell: 3\n"), "trials_per_cell"),
    ("dup-key-fixed", sub("d_model: 16,", "d_model: 16, d_model: 32,"), "d_model"),
    ("dup-key-search", search("lr: {float: [0.1, 0.2]}"), "lr"),
    # strict types
    ("lr-true", fixed("lr: true"), "fixed.lr"),
    ("d_model-true", sub("d_model: 16", "d_model: true"), "fixed.d_model"),
    ("d_model-float", sub("d_model: 16", "d_model: 16.0"), "fixed.d_model"),
    ("d_model-str", sub("d_model: 16", 'd_model: "16"'), "fixed.d_model"),
    ("batch-1e3", sub("batch_size: 8", "batch_size: 1e3"), "fixed.batch_size"),
    ("tpc-1e9", sub("trials_per_cell: 2", "trials_per_cell: 1e9"), "trials_per_cell"),
    ("tpc-huge", sub("trials_per_cell: 2", "trials_per_cell: 1000000"), "trials_per_cell"),
    ("tpc-true", sub("trials_per_cell: 2", "trials_per_cell: true"), "trials_per_cell"),
    ("tpc-zero", sub("trials_per_cell: 2", "trials_per_cell: 0"), "trials_per_cell"),
    ("arch-nested", sub("arch: [lstm]", "arch: [[lstm]]"), "grid.arch"),
    ("arch-map", sub("arch: [lstm]", "arch: [{a: 1}]"), "grid.arch"),
    ("arch-int", sub("arch: [lstm]", "arch: [5]"), "grid.arch"),
    ("arch-typo", sub("arch: [lstm]", "arch: [lsmt]"), "grid.arch"),
    ("task-name-list", sub("name: copy,", "name: [copy],"), "task"),
    ("task-name-map", sub("name: copy,", "name: {a: 1},"), "task"),
    ("task-list", sub("task: {name: copy, n_symbols: 2, alphabet: 4}", "task: [copy]"), "task"),
    ("task-int", sub("task: {name: copy, n_symbols: 2, alphabet: 4}", "task: 5"), "task"),
    ("task-typo", sub("name: copy", "name: cpoy"), "task"),
    ("task-missing", sub("task: {name: copy, n_symbols: 2, alphabet: 4}\n", ""), "task"),
    ("task-lag-twice", sub("alphabet: 4}", "alphabet: 4, lag: -1}"), "task.lag"),
    ("task-lag-negative", sub("alphabet: 4}", "alphabet: 4, lag: -1}").replace("  lag: [4]\n", ""), "task.lag"),
    ("task-and-fixed-task", fixed("task: copy"), "task"),
    # nested unknown keys list their own section's keys
    ("budget-extra", sub("budget: {steps: 20, eval_every: 10}", "budget: {steps: 20, eval_every: 10, bogus: 1}"), "budget.bogus"),
    ("asha-extra", add("scheduler: {asha: {bogus: 1}}\n"), "scheduler.asha.bogus"),
    ("scheduler-extra", add("scheduler: {hyperband: {}}\n"), "scheduler.hyperband"),
    ("objective-extra", add("objective: {metric: memory_length, bogus: 1}\n"), "objective.bogus"),
    ("objective-metric", add("objective: {metric: accuracy}\n"), "objective"),
    ("objective-mode", add("objective: {metric: wall_s, mode: sideways}\n"), "objective"),
    ("per-arch-extra", add("resources: {per_arch: {lstm: {bogus: 1}}}\n"), "resources.per_arch.lstm.bogus"),
    ("per-arch-typo", add("resources: {per_arch: {lsmt: {cpu: 1}}}\n"), "resources.per_arch.lsmt"),
    ("resources-extra", add("resources: {cpus: 1}\n"), "resources.cpus"),
    ("top-extra", add("bogus: 1\n"), "bogus"),
    ("budget-steps-zero", sub("steps: 20", "steps: 0"), "budget.steps"),
    ("budget-steps-float", sub("steps: 20", "steps: 1.5"), "budget.steps"),
    ("budget-wall-inf", sub("eval_every: 10}", "eval_every: 10, max_wall_s: .inf}"), "budget.max_wall_s"),
    ("budget-every-true", sub("eval_every: 10", "eval_every: true"), "budget.eval_every"),
    ("budget-list", sub("budget: {steps: 20, eval_every: 10}", "budget: [20]"), "budget"),
    # resources
    ("cpu-tiny", add("resources: {cpu: 1.0e-9}\n"), "resources.cpu"),
    ("cpu-zero", add("resources: {cpu: 0}\n"), "resources.cpu"),
    ("cpu-inf", add("resources: {cpu: .inf}\n"), "resources.cpu"),
    ("gpu-fraction-over-one", add("resources: {gpu: 1.5}\n"), "resources.gpu"),
    ("gpu-negative", add("resources: {gpu: -1}\n"), "resources.gpu"),
    ("gpu-tiny", add("resources: {gpu: 0.0001}\n"), "resources.gpu"),
    ("cpu-str", add("resources: {cpu: one}\n"), "resources.cpu"),
    # every value a search can sample is valid
    ("choice-invalid", search("d_model: {choice: [16, -5, 18]}").replace("d_model: 16, ", ""), "search.d_model"),
    ("float-inf", sub("[1.0e-3, 1.0e-2]", "[0.001, .inf]"), "search.lr"),
    ("float-nan", sub("[1.0e-3, 1.0e-2]", "[.nan, 0.1]"), "search.lr"),
    ("window-too-big", search("window: {int: [2, 100000]}"), "search.window"),
    ("window-choice-too-big", search("window: {choice: [2, 1000]}"), "search.window"),
    ("d_model-heads", search("d_model: {int: [16, 64]}").replace("d_model: 16, ", "").replace(
        "arch: [lstm]", "arch: [lstm, transformer]"), "search.d_model"),
    ("d_model-heads-high", search("n_heads: {int: [1, 16]}").replace("arch: [lstm]", "arch: [transformer]"),
     "search.n_heads"),
    ("step-with-log", search("d_model: {int: [16, 64], log: true, step: 4}").replace("d_model: 16, ", ""),
     "search.d_model.step"),
    ("step-not-dividing", search("d_model: {int: [16, 66], step: 4}").replace("d_model: 16, ", ""),
     "search.d_model.step"),
    ("step-zero", search("d_model: {int: [16, 64], step: 0}").replace("d_model: 16, ", ""), "search.d_model.step"),
    ("step-on-float", sub("log: true}", "step: 1}"), "search.lr.step"),
    ("choice-empty", search("d_model: {choice: []}").replace("d_model: 16, ", ""), "search.d_model.choice"),
    ("choice-nested", search("d_model: {choice: [16, [32]]}").replace("d_model: 16, ", ""), "search.d_model.choice"),
    ("choice-dup", search("d_model: {choice: [16, 16]}").replace("d_model: 16, ", ""), "search.d_model.choice"),
    ("choice-log", search("d_model: {choice: [16], log: true}").replace("d_model: 16, ", ""), "search.d_model.log"),
    ("dist-scalar", sub("lr: {float: [1.0e-3, 1.0e-2], log: true}", "lr: 5"), "search.lr"),
    ("dist-log-zero", sub("[1.0e-3, 1.0e-2]", "[0, 0.1]"), "search.lr.float"),
    ("dist-two-kinds", sub("log: true}", "choice: [0.1]}"), "search.lr"),
    ("dist-unknown-key", sub("log: true}", "logg: true}"), "search.lr"),
    ("dist-log-str", sub("log: true}", "log: yes please}"), "search.lr.log"),
    ("dist-wrong-way", sub("[1.0e-3, 1.0e-2]", "[1.0e-2, 1.0e-3]"), "search.lr.float"),
    ("dist-three", sub("[1.0e-3, 1.0e-2]", "[1.0e-3, 1.0e-2, 0.1]"), "search.lr.float"),
    ("int-fraction", search("d_model: {int: [1.5, 4]}").replace("d_model: 16, ", ""), "search.d_model.int"),
    ("int-huge", search("d_model: {int: [1, 1.0e30]}").replace("d_model: 16, ", ""), "search.d_model.int"),
    ("search-arch", search("arch: {choice: [lstm]}"), "search.arch"),
    ("search-unknown", search("bogus: {int: [1, 2]}"), "search.bogus"),
    ("search-and-fixed", search("d_model: {int: [16, 32]}"), "search.d_model"),
    ("search-list", sub("search:\n  lr: {float: [1.0e-3, 1.0e-2], log: true}", "search: [lr]"), "search"),
    # other values
    ("window-fixed-too-big", fixed("window: 100"), "fixed.window"),
    ("window-grid-too-big", sub("lag: [4]", "lag: [4]\n  window: [100]"), "grid.window"),
    ("window-zero", fixed("window: 0"), "fixed.window"),
    ("window-str", fixed("window: half"), "fixed.window"),
    ("tau-two", fixed("tau: 2"), "fixed.tau"),
    ("lr-negative", fixed("lr: -1"), "fixed.lr"),
    ("lr-nan", fixed("lr: .nan"), "fixed.lr"),
    ("lr-inf", fixed("lr: .inf"), "fixed.lr"),
    ("dropout-one", fixed("dropout: 1.0"), "fixed.dropout"),
    ("seq_len-one", fixed("seq_len: 1"), "fixed.seq_len"),
    ("seq_len-short", fixed("seq_len: 3"), "fixed.seq_len"),
    ("heads-fixed", fixed("n_heads: 3").replace("arch: [lstm]", "arch: [transformer]"), "d_model"),
    ("lag_dist-bad", sub("alphabet: 4}", "alphabet: 4, lag_dist: weird}"), "task.lag_dist"),
    ("d_model-zero", sub("d_model: 16", "d_model: 0"), "fixed.d_model"),
    ("d_model-negative", sub("d_model: 16", "d_model: -1"), "fixed.d_model"),
    ("d_model-typo", sub("d_model: 16", "d_modle: 16"), "fixed.d_modle"),
    ("fixed-list", sub("fixed: {d_model: 16, batch_size: 8, eval_batch: 8}", "fixed: [1, 2]"), "fixed"),
    ("grid-list", sub("grid:\n  arch: [lstm]\n  lag: [4]", "grid: [lstm]"), "grid"),
    ("grid-empty-axis", sub("lag: [4]", "lag: []"), "grid.lag"),
    ("grid-scalar-axis", sub("lag: [4]", "lag: 4"), "grid.lag"),
    ("grid-map-value", sub("lag: [4]", "lag: [{a: 1}]"), "grid.lag"),
    ("grid-and-fixed", fixed("lag: 4"), "grid.lag"),
    ("grid-arch-empty", sub("arch: [lstm]", "arch: []"), "grid.arch"),
    ("eval_batch-zero", sub("eval_batch: 8", "eval_batch: 0"), "fixed.eval_batch"),
    ("sampler-bogus", add("sampler: annealing\n"), "sampler"),
    ("sampler-grid-two-objectives", add("sampler: grid\nobjective: [{metric: memory_length}, {metric: wall_s, mode: min}]\n"),
     "sampler"),
    ("asha-two-objectives", add("scheduler: {asha: {}}\nobjective: [{metric: memory_length}, {metric: wall_s, mode: min}]\n"),
     "scheduler.asha"),
    ("max_failures-negative", add("max_failures: -1\n"), "max_failures"),
    ("max_concurrent-zero", add("max_concurrent: 0\n"), "max_concurrent"),
    # limits and YAML itself
    ("top-list", "- study: h\n", "(top level)"),
    ("top-scalar", "hello\n", "(top level)"),
    ("empty-file", "", "(top level)"),
    ("comment-only", "# nothing\n", "(top level)"),
    ("malformed", "study: x\ngrid: [unclosed\n", "malformed YAML"),
    ("python-tag", "study: !!python/object/apply:os.system ['echo pwned']\n", "line 1"),
    ("tab-indent", "study: x\ngrid:\n\tarch: [lstm]\n", "line"),
    ("unhashable-key", "? [a]\n: 1\nstudy: x\n", "line"),
    ("int-key", add("1: 2\n"), "1"),
    ("alias-bomb-choice", SMALL_BOMB, "search.d_model.choice"),
    ("alias-bomb-5", BOMB5, "(top level)"),
    ("alias-recursive", "study: h\nx: &a [*a]\n", "aliases"),
    ("deep-nesting", "study: h\nx: " + "[" * 5000 + "]" * 5000 + "\n", ""),
    ("million-cells", sub("lag: [4]", "lag: [" + ", ".join(str(i) for i in range(1, 101)) + "]\n  window: ["
                          + ", ".join(str(i) for i in range(1, 101)) + "]\n  seq_len: ["
                          + ", ".join(str(i) for i in range(200, 300)) + "]"), "grid"),
    ("too-many-trials", sub("lag: [4]", "lag: [" + ", ".join(str(i) for i in range(1, 1001)) + "]").replace(
        "trials_per_cell: 2", "trials_per_cell: 1000"), "trials_per_cell"),
    ("too-many-choices", search("d_model: {choice: [" + ", ".join(str(i) for i in range(8, 2008)) + "]}")
     .replace("d_model: 16, ", ""), "search.d_model.choice"),
    ("nul-char", BASE.replace("study: h", "study: h\x00"), ""),
]


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check_refused(rc: int, err: str, *names: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "study: error:" not in err
    for n in names:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("case, text, key", SPECS, ids=[c[0] for c in SPECS])
def test_hostile_spec_is_refused_in_one_line(case, text, key, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    before = snapshot(tmp_path)
    rc = main(["run", str(spec), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    check_refused(rc, err, str(spec), key)
    assert snapshot(tmp_path) == before           # nothing written, not even the results root


def test_the_table_is_big_enough():
    assert len(SPECS) + len(FILES) + len(ARGS) >= 100


# spec files that are not YAML text at all
FILES = [
    ("latin1", "study: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("binary", bytes(range(256)) * 4, "not UTF-8"),
    ("utf16", "study: h\n".encode("utf-16"), "not UTF-8"),
    ("too-big", b"study: h\n" + b"#" * (1 << 20) + b"\n", "KiB"),
    ("gzip", b"\x1f\x8b\x08\x00" + b"\x00" * 50, "not UTF-8"),
]


@pytest.mark.parametrize("case, data, words", FILES, ids=[c[0] for c in FILES])
def test_spec_that_is_not_text(case, data, words, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(data)
    rc = main(["run", str(spec), "--results", str(tmp_path / "results")])
    check_refused(rc, capsys.readouterr().err, str(spec), words)
    assert not (tmp_path / "results").exists()


def test_dev_zero_is_refused_without_reading_it_all(tmp_path, capsys):
    rc = main(["run", "/dev/zero", "--results", str(tmp_path / "r")])
    check_refused(rc, capsys.readouterr().err, "/dev/zero")
    assert not (tmp_path / "r").exists()


def _study(tmp_path: Path) -> Path:
    """A study folder with a spec and no rows (nothing run)."""
    d = tmp_path / "s"
    d.mkdir()
    (d / "spec.yaml").write_text(BASE)
    return d


# (case id, argv builder from tmp_path, words the line must hold)
ARGS = [
    ("results-empty", lambda t: ["run", str(_spec(t)), "--results", ""], ["--results"]),
    ("results-file", lambda t: ["run", str(_spec(t)), "--results", str(_file(t))], ["--results", "file"]),
    ("status-file", lambda t: ["status", str(_file(t))], ["file"]),
    ("status-empty", lambda t: ["status", ""], ["DIR"]),
    ("status-missing", lambda t: ["status", str(t / "nope")], ["nope"]),
    ("sql-empty-query", lambda t: ["sql", str(_study(t)), ""], ["empty query"]),
    ("sql-blank-query", lambda t: ["sql", str(_study(t)), "   \n "], ["empty query"]),
    ("sql-copy-read-only", lambda t: ["sql", str(_study(t)), f"COPY (SELECT 42) TO '{t}/pwned.csv'"], ["--write"]),
    ("sql-attach-read-only", lambda t: ["sql", str(_study(t)), f"ATTACH '{t}/x.db'"], ["--write"]),
    ("sql-read-outside", lambda t: ["sql", str(_study(t)), "SELECT * FROM read_csv('/etc/hostname')"], ["--write"]),
    ("sql-unlock", lambda t: ["sql", str(_study(t)), "SET enable_external_access = true"], ["study sql"]),
    ("sql-bad", lambda t: ["sql", str(_study(t)), "SELEKT 1"], ["study sql"]),
    ("sql-binary-spec", lambda t: ["sql", str(_binary_study(t)), "SELECT 1"], ["spec.yaml"]),
    ("report-missing", lambda t: ["report", str(t / "nope")], ["nope"]),
    ("resume-not-study", lambda t: ["resume", str(t)], ["not a study folder"]),
    ("no-command", lambda t: [], ["study"]),
    ("unknown-command", lambda t: ["frobnicate"], ["frobnicate"]),
    ("run-missing-spec", lambda t: ["run", str(t / "nope.yaml"), "--results", str(t / "r")], ["nope.yaml"]),
    ("run-dir-as-spec", lambda t: ["run", str(t), "--results", str(t / "r")], ["cannot read"]),
    ("bad-format", lambda t: ["sql", str(_study(t)), "SELECT 1", "--format", "xml"], ["xml"]),
    ("results-name-too-long", lambda t: ["run", str(_spec(t)), "--results", str(t / ("r" * 300))], ["unusable path"]),
    ("results-under-a-file", lambda t: ["run", str(_spec(t)), "--results", str(_file(t) / "sub")], ["cannot write"]),
]


def _spec(t: Path) -> Path:
    p = t / "spec.yaml"
    p.write_text(BASE)
    return p


def _file(t: Path) -> Path:
    p = t / "afile"
    p.write_text("x")
    return p


def _binary_study(t: Path) -> Path:
    d = t / "b"
    d.mkdir()
    (d / "spec.yaml").write_bytes(b"\xff\xfe\x00garbage")
    return d


@pytest.mark.parametrize("case, argv, words", ARGS, ids=[c[0] for c in ARGS])
def test_hostile_arguments(case, argv, words, tmp_path, capsys):
    args = argv(tmp_path)
    before = snapshot(tmp_path)
    rc = main(args)
    err = capsys.readouterr().err
    check_refused(rc, err, *words)
    # nothing new but DuckDB's view cache for a study folder
    assert {p for p in snapshot(tmp_path) - before if not p.endswith("study.duckdb")} == set()


def test_comment_only_sql_is_no_error(tmp_path, capsys):
    d = _study(tmp_path)
    assert main(["sql", str(d), "-- nothing here"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_write_lets_sql_write(tmp_path, capsys):
    d = _study(tmp_path)
    assert main(["sql", "--write", str(d), f"COPY (SELECT 42 AS x) TO '{tmp_path}/out.csv'"]) == 0
    assert (tmp_path / "out.csv").read_text().split() == ["x", "42"]


def respec(d, text: str) -> None:
    """Give a synthetic study another spec, as a new spec version (a spec.yaml edited by hand is refused)."""
    from study import grow
    from study.results import Store
    grow.record(Store(str(d)), grow.load_history(Store(str(d))), text)


def test_quote_in_the_study_path_is_data_not_sql(tmp_path, capsys):
    """A folder named like an injection is read as a folder, in `study sql` and `study report`."""
    from analysis.synthetic import write_study
    evil = tmp_path / "x'); COPY (SELECT 42) TO 'pwned.csv'; SELECT * FROM read_parquet('x"
    write_study(evil, n_trials=4, iterations=1)
    respec(evil, BASE)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["sql", "--write", str(evil), "SELECT count(*) AS n FROM trials"]) == 0
        assert capsys.readouterr().out.split()[2] == "4"
        assert main(["report", str(evil)]) == 0
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned.csv").exists() and not (evil / "pwned.csv").exists()
    assert (evil / "report" / "report.html").exists()


def test_glob_characters_in_the_study_path(tmp_path, capsys):
    from analysis.synthetic import write_study
    d = tmp_path / "run[1]*"
    write_study(d, n_trials=4, iterations=1)
    respec(d, BASE)
    (tmp_path / "run1x").mkdir()         # what the glob `run[1]*` would also match
    assert main(["sql", str(d), "SELECT count(*) AS n FROM trials"]) == 0
    assert capsys.readouterr().out.split()[2] == "4"


@pytest.mark.parametrize("case, text, key", [SPECS[16]], ids=["seeds"])
def test_real_command_refuses_in_one_line(case, text, key, tmp_path):
    """The console command itself (a subprocess): same line, same exit code, no traceback."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    r = run_cli("run", str(spec), "--results", str(tmp_path / "results"), timeout=120)
    check_refused(r.returncode, r.stderr, str(spec), key)
    assert not (tmp_path / "results").exists()


def test_real_command_results_parent_is_never_touched(tmp_path):
    """`study: ".."` with --force-new once moved the results folder's parent aside."""
    parent = tmp_path / "parent"
    (parent / "results").mkdir(parents=True)
    (parent / "unrelated.txt").write_text("keep me")
    spec = tmp_path / "spec.yaml"
    spec.write_text(sub("study: h", 'study: ".."'))
    r = run_cli("run", str(spec), "--results", str(parent / "results"), "--force-new", timeout=120)
    check_refused(r.returncode, r.stderr, "study")
    assert sorted(os.listdir(parent)) == ["results", "unrelated.txt"]
    assert os.listdir(parent / "results") == []
