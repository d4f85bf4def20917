"""Where the data the tests read in place lives: ../shared beside the repository (as on the
developers' machines and in CI), or VPOOL_SHARED_DIR."""

import os
from pathlib import Path

SHARED = Path(os.environ.get("VPOOL_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
