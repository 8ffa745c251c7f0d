"""The ``c3d`` source: one C3D file is one sequence, its pose fitted to the markers (docs/c3d.md)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.records import Provenance, RawMotion
from pipeline.sources.base import SourceError, find_licence
from pipeline.sources.c3d.reader import discover_c3d, read_c3d


class C3DSource:
    """Reads C3D files (``get_source("c3d")``); one file is one sequence, its pose fitted to the markers.

    Ids: ``<dataset>/<subject>/<name>`` from the path as for AMASS (``dataset`` = first folder under the
    root, ``subject`` = last folder, ``name`` = file stem). The ``RawMotion`` carries the trimmed record
    and the marker IK in ``measured`` (``pipeline.sources.c3d.motion``); force plates are processed at the
    canonical rate by ``pipeline.process.process_motion``.
    """

    name = "c3d"

    def discover(self, root: Path) -> list[Path]:
        """All ``*.c3d`` files (any case) under ``root``, sorted by relative path, absolute."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"C3D source root {root} is not a directory")
        return [p.absolute() for p in discover_c3d(root)]

    def read(self, path: Path, root: Path) -> list[RawMotion]:
        """Read one C3D file and fit the skeleton to its markers; ``SourceError`` (one line) if it cannot."""
        from pipeline.sources.amass.reader import parse_ids
        from pipeline.sources.c3d.motion import raw_from_c3d

        path, root = Path(path), Path(root)
        rec = read_c3d(path, root)
        rel = PurePosixPath(rec.path)
        dataset, subject, _ = parse_ids(rel)
        if len(rel.parts) < 3:  # no subject folder: the file's SUBJECTS:NAMES, else "unknown"
            dataset = rel.parts[0] if len(rel.parts) == 2 else "unknown"
            subject = re.sub(r"[\s/\\:]+", "_", rec.subject.get("name", "").strip()) or "unknown"
        prov = Provenance(source=self.name, path=rec.path, sha256=rec.sha256, dataset=dataset, subject=subject,
                          name=path.stem, size_bytes=rec.size_bytes, licence=find_licence(path, root))
        try:
            return [raw_from_c3d(rec, prov)]
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise SourceError(rel, " ".join(str(exc).split())) from None
