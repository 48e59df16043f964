"""Where the checkout is, and the stack's own directory: everything the launcher downloads, writes or runs
lives under ``.stack/`` (or FLYWHEEL_STACK_DIR, for a second stack)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = Path(os.environ.get("FLYWHEEL_STACK_DIR", ROOT / ".stack")).resolve()
VENV_BIN = Path(sys.executable).parent
