"""No unsafe loading anywhere in the package or the benchmarks (DESIGN.md: no pickle anywhere).

Fails naming file:line for: importing or calling pickle-like modules (pickle, cPickle, dill,
shelve, marshal, joblib), `np.load` without `allow_pickle=False`, any `allow_pickle=True`,
`torch.load` without `weights_only=True`, `pandas.read_pickle`, the builtins `eval` / `exec`,
and `yaml.load` / `yaml.unsafe_load` (yaml.safe_load is fine).

A line may opt out with a comment `# unsafe-load-ok: <why>` (the reason is required), for a
reviewed case such as a benchmark reading a file it wrote itself; the exemptions are listed
when the test runs with -s.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("pfseg_pipeline", "bench")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}
NUMPY = {"np", "numpy"}


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_constant(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


EXEMPT_MARK = re.compile(r"#\s*unsafe-load-ok:\s*\S")


def exempt_lines(source: str) -> set[int]:
    """Line numbers carrying `# unsafe-load-ok: <why>` (with a reason)."""
    return {n for n, line in enumerate(source.splitlines(), start=1) if EXEMPT_MARK.search(line)}


def unsafe_calls(source: str, filename: str, honour_exemptions: bool = True) -> list[str]:
    """'file:line: what' for every unsafe load in `source`."""
    found = unsafe_calls_all(source, filename)
    if not honour_exemptions:
        return found
    exempt = exempt_lines(source)
    return [p for p in found if int(p.split(":")[1]) not in exempt]


def unsafe_calls_all(source: str, filename: str) -> list[str]:
    found = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"{filename}:{line}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLE_MODULES:
                found.append(f"{filename}:{line}: imports from {node.module}")
        elif (isinstance(node, ast.keyword) and node.arg == "allow_pickle"
              and not _is_constant(node.value, False)):
            found.append(f"{filename}:{getattr(node.value, 'lineno', line)}: allow_pickle is not False")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                found.append(f"{filename}:{line}: calls {func.id}()")
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner, name = func.value.id, func.attr
                no_pickle = _is_constant(_keyword(node, "allow_pickle"), False)
                weights_only = _is_constant(_keyword(node, "weights_only"), True)
                if owner in NUMPY and name == "load" and not no_pickle:
                    found.append(f"{filename}:{line}: {owner}.load without allow_pickle=False")
                elif owner == "torch" and name == "load" and not weights_only:
                    found.append(f"{filename}:{line}: torch.load without weights_only=True")
                elif owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
                    found.append(f"{filename}:{line}: yaml.{name} (use yaml.safe_load)")
                elif owner in ("pd", "pandas") and name == "read_pickle":
                    found.append(f"{filename}:{line}: {owner}.read_pickle")
                elif owner in PICKLE_MODULES:
                    found.append(f"{filename}:{line}: calls {owner}.{name}")
    return sorted(set(found), key=lambda s: (s.split(":")[0], int(s.split(":")[1])))


def scanned_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))


def test_package_loads_nothing_unsafely():
    files = scanned_files()
    assert len(files) > 20, "the scan found too few files: wrong root?"
    problems, exempted = [], []
    for path in files:
        source, name = path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))
        found = unsafe_calls(source, name)
        problems += found
        exempted += sorted(set(unsafe_calls(source, name, honour_exemptions=False)) - set(found))
    if exempted:
        print("\nexempted (# unsafe-load-ok):\n" + "\n".join(exempted))
    assert not problems, "unsafe loading (fix it, or mark a reviewed line '# unsafe-load-ok: <why>'):\n" + (
        "\n".join(problems))


BAD_SNIPPET = '''\
import pickle
from dill import loads
import numpy as np, torch, yaml
a = np.load("x.npy")
b = np.load("x.npz", allow_pickle=True)
c = torch.load("x.pt")
d = torch.load("x.pt", weights_only=False)
e = yaml.load(open("x.yaml"))
f = eval("1 + 1")
g = pickle.loads(b"")
h = np.load("x.npy", allow_pickle=False)
i = torch.load("x.pt", weights_only=True, map_location="cpu")
j = yaml.safe_load("a: 1")
model.eval()
'''


@pytest.mark.parametrize("line,what", [(1, "imports pickle"), (2, "imports from dill"),
                                       (4, "np.load without allow_pickle=False"), (5, "allow_pickle"),
                                       (6, "torch.load without weights_only=True"),
                                       (7, "torch.load without weights_only=True"), (8, "yaml.load"),
                                       (9, "calls eval()"), (10, "calls pickle.loads")])
def test_checker_catches_unsafe_snippet(line, what):
    problems = unsafe_calls(BAD_SNIPPET, "snippet.py")
    assert any(p.startswith(f"snippet.py:{line}:") and what in p for p in problems), problems


def test_exemption_needs_a_reason():
    source = ('import torch\n'
              'a = torch.load("x.pt")  # unsafe-load-ok: nnU-Net\'s own checkpoint, written by this run\n'
              'b = torch.load("x.pt")  # unsafe-load-ok:\n')
    assert unsafe_calls(source, "s.py") == ["s.py:3: torch.load without weights_only=True"]


def test_checker_accepts_safe_calls():
    problems = unsafe_calls(BAD_SNIPPET, "snippet.py")
    assert not any(p.startswith(f"snippet.py:{n}:") for p in problems for n in (11, 12, 13, 14)), problems
