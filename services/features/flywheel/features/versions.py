"""The feature-set versions the features service can compute with: today's, and any kept one.

Today's versions come from ``features.yaml`` and are kept in the archive on start; older
ones (a model pinned to a version from before an edit) are read from the archive on first
use and remembered: a version is immutable, so a copy never goes stale.
"""

from __future__ import annotations

import re

from flywheel.common.featuresets import FeatureSet
from flywheel.common.featureversions import FeatureSetArchive

VERSION = re.compile(r"[0-9a-f]{16}")


class KnownVersions:
    """Feature sets by (dataset, version); ``archive`` None keeps only today's (tests)."""

    def __init__(self, current: dict[str, FeatureSet], archive: FeatureSetArchive | None = None) -> None:
        self.current = current
        self.archive = archive
        self.known = {(d, fs.version): fs for d, fs in current.items()}

    def keep_current(self) -> list[str]:
        """Put today's versions in the archive (once each); their keys. Blocking I/O."""
        if self.archive is None:
            return []
        return [self.archive.put(fs) for fs in self.current.values()]

    def find(self, dataset: str, version: str) -> FeatureSet | None:
        """A version of a dataset's feature set, or None when no one ever kept it. Blocking I/O on a miss."""
        found = self.known.get((dataset, version))
        if found is None and self.archive is not None and VERSION.fullmatch(version):
            found = self.archive.get(dataset, version)
            if found is not None:
                self.known[(dataset, version)] = found
        return found

    def versions(self, dataset: str) -> list[str]:
        """Every version of a dataset's feature set known here or kept in the archive. Blocking I/O."""
        kept = self.archive.versions(dataset) if self.archive is not None else []
        return sorted({v for d, v in self.known if d == dataset} | set(kept))
