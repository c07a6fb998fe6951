"""The bench tests import `bench`, which is not an installed package: the repository root goes
on sys.path once, here, before any of them is collected."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
