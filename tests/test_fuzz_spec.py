"""Property-based fuzzing of the spec loader (Hypothesis): random text, random bytes, and valid
specs with random mutations. Whatever comes in, `study run --dry-run` exits 0, or exits 2 with
one stderr line and no traceback, and writes nothing. In-process, so hundreds of examples take
seconds."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.cli import main
from study.config import SpecError
from study.validate import parse_spec

BASE = yaml.safe_load("""\
study: fz
task: {name: copy, n_symbols: 2, alphabet: 4}
grid:
  arch: [lstm, transformer]
  lag: [4]
search:
  lr: {float: [1.0e-3, 1.0e-2], log: true}
  d_model: {choice: [16, 32]}
fixed: {batch_size: 8, eval_batch: 8}
trials_per_cell: 2
budget: {steps: 20, eval_every: 10}
scheduler: {asha: {grace_period: 1}}
resources: {cpu: 1, per_arch: {transformer: {cpu: 1}}}
seeds: [0, 1]
""")
# FUZZ_N=2000 explores afresh; the suite replays the same 40 examples per test (derandomized)
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_N", 40)), deadline=None, derandomize="FUZZ_N" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Values a mutation may plant. Strings come from a fixed vocabulary: a random string could name a
# real folder, and `path:` would then read it as a text corpus.
WORDS = ["lstm", "transformer", "copy", "text", "full", "", "x", "..", ".", "null", "1e3", "true",
         "memory_length", "max", "tpe", "grid", "uniform", "fixed", "d_model", "lr", "a/b"]
leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from(WORDS),
                   st.floats(allow_nan=True, allow_infinity=True))
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.sampled_from(WORDS), inner, max_size=3)),
                      max_leaves=8)


def run_dry(text: str | bytes) -> tuple[int, str, bool]:
    """(exit code, stderr, whether anything was written under the results root)."""
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "spec.yaml"
        spec.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["run", str(spec), "--results", str(Path(d) / "results"), "--dry-run"])
        return rc, err.getvalue(), (Path(d) / "results").exists()


def check(rc: int, err: str, wrote: bool) -> None:
    assert not wrote
    assert rc in (0, 2), err
    assert "Traceback" not in err
    if rc == 2:
        assert len(err.strip().splitlines()) == 1 and "spec.yaml" in err, err


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text):
    check(*run_dry(text))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    check(*run_dry(data))


def mutate(spec: dict, path: list, op: str, value) -> dict:
    """Replace, delete or add at a key path of a copy of spec."""
    spec = yaml.safe_load(yaml.safe_dump(spec))
    node = spec
    for k in path[:-1]:
        node = node[k]
    key = path[-1]
    if op == "replace":
        node[key] = value
    elif op == "delete" and isinstance(node, dict):
        node.pop(key, None)
    elif op == "add" and isinstance(node, dict):
        node[f"{key}" if not isinstance(value, str) or not value else value] = value
    return spec


def key_paths(node, prefix=()) -> list[tuple]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(key_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(key_paths(v, prefix + (i,)))
    return out


PATHS = key_paths(BASE)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["replace", "delete", "add"]), values),
                min_size=1, max_size=3))
def test_mutated_specs(mutations):
    spec = BASE
    for path, op, value in mutations:
        try:
            spec = mutate(spec, list(path), op, value)
        except (KeyError, IndexError, TypeError):
            continue          # an earlier mutation removed the path
    text = yaml.safe_dump(spec, allow_unicode=True)
    rc, err, wrote = run_dry(text)
    check(rc, err, wrote)
    if rc == 0:               # what the CLI accepted parses again to the same answer
        parse_spec(text, "again.yaml")


@FUZZ
@given(st.integers(0, 400), st.integers(0, 20), st.text(max_size=8))
def test_text_edits_of_a_valid_spec(at, cut, insert):
    text = yaml.safe_dump(BASE)
    at = min(at, len(text))
    check(*run_dry(text[:at] + insert + text[at + cut:]))


def test_the_base_spec_is_valid():
    """The fuzzers start from a spec that passes, so a mutation is what makes it fail."""
    parse_spec(yaml.safe_dump(BASE), "base.yaml")
    try:
        parse_spec(yaml.safe_dump({**BASE, "seeds": [0, 0]}), "bad.yaml")
    except SpecError:
        pass
    else:
        raise AssertionError("a duplicate seed must be refused")
