"""No import circles through the command line: every layer raises the error types of
study/errors.py, and nothing but the entry point imports study.cli (lazily or not)."""
from __future__ import annotations

import ast

from tests.conftest import ROOT


def imported_modules(path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):         # function-level imports included
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_nothing_imports_the_command_line():
    files = [p for d in ("study", "analysis") for p in (ROOT / d).rglob("*.py") if p.name != "cli.py"]
    assert len(files) > 20
    offenders = [str(p.relative_to(ROOT)) for p in files if "study.cli" in imported_modules(p)]
    assert not offenders, f"import the error types from study.errors instead: {offenders}"


def test_the_error_types_are_one_and_the_same_everywhere():
    import analysis.db
    import study.config
    from study.errors import SpecError, UsageError
    assert study.config.UsageError is UsageError and study.config.SpecError is SpecError
    assert analysis.db.UsageError is UsageError
