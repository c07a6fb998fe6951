"""docs/RELIABILITY.md is generated from the tables the tests run; it must be up to date."""

from __future__ import annotations

import ast
import re

from .faults import CORPUS, FAULTS
from .kinds import KINDS
from .make_reliability_doc import DOC, ROOT, render


def test_reliability_page_is_up_to_date():
    assert DOC.is_file(), f"{DOC} is missing: run python -m tests.bad_inputs.make_reliability_doc"
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"{DOC} is out of date with tests/bad_inputs/kinds.py: run "
        "python -m tests.bad_inputs.make_reliability_doc and commit the page")


def test_every_row_is_on_the_page():
    text = render()
    for kind in KINDS:
        assert kind.problem.replace("|", "\\|") in text


def test_every_fault_names_tests_that_exist():
    """A row of the faults table is only as good as the tests it names: each must exist."""
    ids = {k.id for k in KINDS}
    for fault in FAULTS:
        assert fault.tests, fault.fault
        for test in fault.tests:
            corpus_row = re.fullmatch(re.escape(CORPUS) + r"\[(.+)\]", test)
            if corpus_row:
                assert corpus_row.group(1) in ids, test
                continue
            path, name = test.split("::")
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, test
