"""README.md quotes the checkpoint sizes of a default-preset PFSeg fold folder; they must be the
ones computed from the state dicts (bench/checkpoint_sizes.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quotes_the_computed_checkpoint_sizes():
    from bench.checkpoint_sizes import checkpoint_sizes, readme_line

    sizes = checkpoint_sizes()
    # Adam keeps two moments per weight: latest is three times final, give or take the metadata
    assert 2 * sizes["weights"] <= sizes["optimizer"] < 2 * sizes["weights"] + 10**6
    assert sizes["final"] == sizes["weights"] and sizes["latest"] > 2.99 * sizes["final"]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert readme_line(sizes) in readme, "README.md: update the checkpoint sizes to\n" + readme_line(sizes)
