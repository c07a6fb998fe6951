"""docs/RELIABILITY.md is generated from the tables the tests run; it must be up to date."""

from __future__ import annotations

from .kinds import KINDS
from .make_reliability_doc import DOC, render


def test_reliability_page_is_up_to_date():
    assert DOC.is_file(), f"{DOC} is missing: run python -m tests.bad_inputs.make_reliability_doc"
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"{DOC} is out of date with tests/bad_inputs/kinds.py: run "
        "python -m tests.bad_inputs.make_reliability_doc and commit the page")


def test_every_row_is_on_the_page():
    text = render()
    for kind in KINDS:
        assert kind.problem.replace("|", "\\|") in text
