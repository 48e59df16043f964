"""The code version a model was trained with: the git commit, or a hash of the source."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import flywheel.common
import flywheel.training


def _git_commit(where: Path) -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return f"{head}-dirty" if dirty else head


def source_hash(packages: list[Path]) -> str:
    """sha256 over the Python sources of the packages (path and bytes), in a stable order."""
    digest = hashlib.sha256()
    for root in packages:
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def code_version() -> str:
    """``<commit>`` (``-dirty`` with local edits) or, without git, ``src-<hash of the sources>``."""
    here = Path(flywheel.training.__file__).resolve().parent
    packages = [here, Path(flywheel.common.__file__).resolve().parent]
    commit = _git_commit(here)
    if commit and commit.endswith("-dirty"):
        # Uncommitted edits: the commit alone would not name this code, the source hash does.
        return f"{commit}+src-{source_hash(packages)}"
    return commit or f"src-{source_hash(packages)}"
