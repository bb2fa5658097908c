"""The spec reference (`study params`, docs/spec.md) says what the code does, and docs/spec.md is
what the code generates today."""
from __future__ import annotations

from pathlib import Path

import pytest

from study import reference
from study.cli import main
from study.config import Spec, TrainConfig, flat_params, known_params, resolve
from study.registry import MODELS, TASKS

ROOT = Path(__file__).resolve().parents[1]


def test_docs_spec_md_is_what_the_code_generates():
    current = (ROOT / "docs" / "spec.md").read_text()
    assert current == reference.markdown(), (
        f"docs/spec.md is stale: regenerate it with `{reference.REGENERATE}` and commit it")


def test_study_params_prints_every_key_a_spec_may_set(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.strip()
              and not line.startswith("   ")}
    assert set(known_params()) | {"arch", "task"} <= listed
    assert set(Spec.model_fields) <= listed                      # every section of the spec
    assert {"budget.steps", "log.mlflow.tracking_uri", "log.wandb.mode"} <= listed
    assert main(["params", "--markdown"]) == 0
    assert capsys.readouterr().out == reference.markdown()


def test_every_spec_section_says_what_it_means():
    missing = [r.key for r in reference.spec_rows() if not r.meaning]
    assert not missing, f"give these a comment where they are declared, or a HELP entry: {missing}"


def rows_for(reg, name: str) -> dict[str, reference.Row]:
    rows = [r for r in reference.registry_rows(reg) if r.users == "all" or name in r.users.split(", ")]
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys)), f"{name}: a key listed twice: {keys}"
    return {r.key: r for r in rows}


@pytest.mark.parametrize("arch", MODELS.names())
def test_model_rows_match_what_a_trial_of_each_arch_uses(arch):
    """Checked against the path a trial takes: resolve() routes the values and the built configs
    give the effective defaults (flat_params is the trial's Parquet row)."""
    used = flat_params(resolve({"arch": arch, "task": "copy"}))
    rows = rows_for(MODELS, arch)
    model_keys = set(used) - set(TrainConfig.model_fields) - set(TASKS.fields("copy")) - {"seq_len"}
    assert set(rows) == model_keys
    for k, r in rows.items():
        assert r.default == reference.value(used[k]), (arch, k)


@pytest.mark.parametrize("task", TASKS.names())
def test_task_rows_match_what_a_trial_of_each_task_uses(task):
    used = flat_params(resolve({"arch": "lstm", "task": task}))
    rows = rows_for(TASKS, task)
    task_keys = set(used) - set(TrainConfig.model_fields) - set(MODELS.fields("lstm")) - {"seq_len"}
    assert set(rows) == task_keys
    for k, r in rows.items():
        assert r.default == reference.value(used[k]), (task, k)
    # a key the task does not take is not passed to it (it is recorded as null)
    other = set(TASKS.all_fields()) - set(rows)
    for k in other:
        assert k in resolve({"arch": "lstm", "task": task, k: 1}).unused or k in TrainConfig.model_fields


def test_ranges_are_the_ones_validation_enforces():
    """A value just outside a listed range is refused when a trial is resolved; the bound itself
    (>= / <=) is accepted."""
    from pydantic import ValidationError
    checked = 0
    model_rows = reference.registry_rows(MODELS)
    for r in reference.train_rows() + model_rows:
        if not r.range or " " not in r.range or "," in r.range:
            continue
        op, bound = r.range.split(" ", 1)
        arch = r.users.split(", ")[0] if r in model_rows and r.users != "all" else "lstm"
        num = float(bound) if "." in bound or r.type.startswith("float") else int(bound)
        bad = {">=": num - 1, ">": num, "<=": num + 1, "<": num}[op]
        with pytest.raises(ValidationError):
            resolve({"arch": arch, "task": "copy", r.key: bad})
        checked += 1
    assert checked >= 10
