"""The workspace: where preprocessed data and results live (the one place env is read).

Resolution order: `--workspace DIR`, else `$PFSEG_HOME`, else `./pfseg_data`.
Downloaded reference files (the MNI152 template's wheel) live in the cache:
`$PFSEG_CACHE`, else `$XDG_CACHE_HOME/pfseg_pipeline`, else `~/.cache/pfseg_pipeline`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "PFSEG_HOME"
CACHE_ENV_VAR = "PFSEG_CACHE"
CACHE_FOLDER = __name__.split(".")[0]   # the package's name: ~/.cache/pfseg_pipeline


def template_cache_dir() -> Path:
    """The folder that holds downloaded templates (created by whoever writes there first)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / CACHE_FOLDER).absolute()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, workspace: str | os.PathLike | None = None) -> Workspace:
        if workspace is not None:
            return cls(Path(workspace).expanduser().absolute())
        env = os.environ.get(ENV_VAR)
        return cls(Path(env).expanduser().absolute() if env else Path("pfseg_data").absolute())

    def preprocessed(self, name: str) -> Path:
        return self.root / "preprocessed" / name

    def cases_dir(self, name: str) -> Path:
        return self.preprocessed(name) / "cases"

    def plans_file(self, name: str) -> Path:
        return self.preprocessed(name) / "plans.json"

    def dataset_file(self, name: str) -> Path:
        return self.preprocessed(name) / "dataset.json"

    def results(self, name: str) -> Path:
        return self.root / "results" / name

    def network_dir(self, name: str, network: str, variant: str | None = None) -> Path:
        return self.results(name) / (f"{network}__{variant}" if variant else network)

    def fold_dir(self, name: str, network: str, fold: str | int, variant: str | None = None) -> Path:
        return self.network_dir(name, network, variant) / f"fold_{fold}"
