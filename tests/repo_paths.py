"""Where the tests find the repository and the shared public data."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MNEMORAY_DATA", REPO.parent / "shared" / "data"))
