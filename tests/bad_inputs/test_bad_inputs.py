"""Every bad input of the KINDS table, run through the command's `main` as the console script
does: exit 2, one line naming the file and the problem, no traceback, no partial output."""

from __future__ import annotations

import importlib

import pytest

from pfseg_pipeline.cli.common import run

from . import builders as b
from .kinds import KINDS, LOG_FILES, MODULES

MIN_KINDS = 20


def run_command(command: str, argv: list[str]) -> int:
    module = importlib.import_module(f"pfseg_pipeline.cli.{MODULES[command]}")
    return run(module.main, argv)


def error_lines(stderr: str, names: str, words: tuple[str, ...], tmp: str = "") -> list[str]:
    """Lines of stderr naming `names` with every one of `words` (case-insensitive), the words
    looked for outside `names` and the test's `tmp` folder (whose name holds the test's id)."""
    found = []
    for line in stderr.splitlines():
        if names not in line:
            continue
        rest = line.replace(names, " ")
        rest = rest.replace(tmp, " ") if tmp else rest
        if all(w.lower() in rest.lower() for w in words):
            found.append(line)
    return found


def test_corpus_covers_enough_kinds():
    kinds = sorted({k.kind for k in KINDS})
    commands = sorted({k.command for k in KINDS})
    print(f"\nbad-input corpus: {len(kinds)} kinds in {len(KINDS)} rows over {len(commands)} commands "
          f"({', '.join(commands)})")
    assert len(kinds) >= MIN_KINDS
    assert len({k.id for k in KINDS}) == len(KINDS), "row ids must be unique"


@pytest.mark.parametrize("kind", KINDS, ids=[k.id for k in KINDS])
def test_bad_input(kind, ctx, capsys):
    scenario = kind.make(ctx)
    before = b.snapshot(*scenario.watch)
    intact = {p: p.read_bytes() for p in scenario.intact}
    capsys.readouterr()

    code = run_command(kind.command, scenario.argv)
    err = capsys.readouterr().err

    assert "Traceback" not in err, err
    assert code == kind.exit_code, err
    matching = error_lines(err, scenario.names, kind.words, str(ctx.tmp))
    assert matching, f"no stderr line names {scenario.names!r} with {kind.words}:\n{err}"
    assert not b.temporary_files(*scenario.watch), "temporary files left behind"
    for path, content in intact.items():
        assert path.read_bytes() == content, f"{path} changed"
    for path in scenario.expect_outputs:
        assert path.is_file() and path.stat().st_size > 0, f"{path} missing: the good cases must finish"
    if scenario.check is not None:
        scenario.check()
    after = b.snapshot(*scenario.watch)
    new = sorted(p for p in after if p not in before)
    allowed = set(LOG_FILES) | set(scenario.allowed) | {p.name for p in scenario.expect_outputs}
    unexpected = [p for p in new if p.name not in allowed]
    assert not unexpected, f"left behind: {unexpected}"
    changed = [p for p in before if p in after and after[p] != before[p] and p.name not in allowed]
    assert not changed, f"changed: {changed}"


def test_error_lines_are_one_line_each():
    """The matcher above needs the path and the problem on one line: a sanity check of it."""
    err = "error: /x/y.nii.gz: truncated file (EOFError)\nerror: 1 problem(s) found\n"
    assert error_lines(err, "/x/y.nii.gz", ("truncated",))
    assert not error_lines(err, "/x/z.nii.gz", ("truncated",))
    line = "error: /tmp/test_truncated/a.nii: bad"
    assert not error_lines(line, "/tmp/test_truncated/a.nii", ("truncated",))
