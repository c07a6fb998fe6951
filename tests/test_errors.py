"""errors.first_line: a third-party error quoted in one line."""

from __future__ import annotations

from pfseg_pipeline.errors import first_line


def test_first_line_keeps_one_line_cut_to_the_limit_or_names_the_type():
    exc = RuntimeError("  header too long: 9999 bytes\nframe 1\nframe 2")
    assert first_line(exc) == "header too long: 9999 bytes"
    assert first_line(exc, 6) == "header"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(KeyError()) == "KeyError"
