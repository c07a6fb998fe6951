"""Fixtures of the bad-input corpus: templates made once per session, copied by each row."""

from __future__ import annotations

import logging

import pytest

from .kinds import Ctx, write_model_dir, write_workspace


@pytest.fixture(scope="session")
def model_template(tmp_path_factory):
    """A results network folder: tiny pfseg plans (4 modalities, HR 16^3) + random weights."""
    return write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def workspace_template(tmp_path_factory):
    """A workspace with three tiny cached cases as dataset 'Tiny' (plans: 1 epoch of 1 step)."""
    return write_workspace(tmp_path_factory.mktemp("workspace"))


@pytest.fixture
def ctx(tmp_path, monkeypatch, synthetic_raw, model_template, workspace_template) -> Ctx:
    return Ctx(tmp_path, monkeypatch, synthetic_raw, model_template, workspace_template)


@pytest.fixture(autouse=True)
def _detach_command_logging():
    """Commands attach handlers to the root logger (stderr of this test, log files in tmp):
    detach and close them so later tests do not write to closed streams."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pfseg", False):
            root.removeHandler(handler)
            handler.close()


def pytest_terminal_summary(terminalreporter):
    """One line at the end of the session: how much of the bad-input corpus this run covered."""
    from .kinds import CRASHES, KINDS, ODD

    ran = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])
           if "test_bad_input[" in getattr(r, "nodeid", "")]
    if ran:
        terminalreporter.write_line(
            f"bad-input corpus: {len({k.kind for k in KINDS})} kinds of bad input in {len(KINDS)} rows "
            f"({len(ran)} run), {len(ODD)} odd-but-valid inputs, {len(CRASHES)} crash tests")


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Tiny volumes: one intra-op thread is faster than several fighting for 2 shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
