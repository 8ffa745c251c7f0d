"""AddBiomechanics .b3d source (pipeline.sources.addbiomechanics) against ../shared/data/addbiomechanics/b3d
(MANIFEST.md, format notes ../shared/formats/b3d.md); skipped where absent. Malformed variants are made here
from the real file's bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.sources.addbiomechanics import b3d
from pipeline.sources.base import SourceError, get_source

B3D = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "addbiomechanics" / "b3d"
if not B3D.is_dir():
    B3D = Path("/work/shared/data/addbiomechanics/b3d")
pytestmark = pytest.mark.skipif(not B3D.is_dir(), reason=f"AddBiomechanics .b3d sample absent ({B3D}); see shared/data/MANIFEST.md")
FILE = B3D / "results.b3d"


def test_header_and_byte_arithmetic_match_the_format_notes():
    data = FILE.read_bytes()
    h = b3d.parse_header(data)
    assert len(data) == 1_948_025 and h.header_bytes == 1_212_932
    assert (h.version, h.num_dofs, h.sensor_frame_size, h.pass_frame_size) == (4, 33, 1401, 1394)
    assert [t.length for t in h.trials] == [132, 131] and all(len(t.passes) == 1 for t in h.trials)
    assert h.contact_bodies == ("calcn_r", "calcn_l") and len(h.marker_names) == 52
    assert h.trials[0].timestep_s == pytest.approx(0.01) and h.mass_kg == pytest.approx(68.0)
    trial = b3d.read_trial(data, h, 1)
    assert trial.markers_m.shape == (131, 52, 3) and 0.5 < np.isfinite(trial.markers_m).mean() <= 1.0
    assert np.isfinite(trial.pos).all() and trial.tau.shape == (131, 33)


def test_every_trial_builds_by_marker_ik_with_the_embedded_marker_set():
    src = get_source("addbiomechanics")
    assert src.discover(B3D.parent) == [FILE.absolute()]
    raws = src.read(FILE, B3D)
    assert [r.provenance.name for r in raws] == ["walking2_segment_0", "walking1_segment_0"]
    for r in raws:
        assert r.provenance.subject == "results" and r.fps_hz == pytest.approx(100.0)
        ik = r.measured.ik
        assert ik.targets.free.sum() > 10  # markers placed by the model's MarkerSet
        assert np.nanmedian(ik.rmse_m) < 0.015 and 1.5 < ik.height_m < 1.9
        res = r.measured.source_results
        assert len(res.dof_names) == 33 and res.dof_names[0] == "pelvis_tilt" and res.tau.shape[1] == 33
        # the sample was processed for kinematics only: no contact forces, the trial builds without them
        assert r.measured.forces is None and "addb_marker_rms_m" in r.measured.extra_metrics


def _set_version(data: bytes, version: int) -> bytes:
    """The file with the header's top-level field 10 (version, a one-byte varint) set to ``version``."""
    (h,) = struct.unpack_from("<q", data, 0)
    i, hdr = 8, data[: 8 + h]
    while i < 8 + h:
        tag, j = b3d._varint(hdr, i)
        field, wt = tag >> 3, tag & 7
        if field == 10 and wt == 0:
            return data[:j] + bytes([version]) + data[j + 1:]
        if wt == 0:
            _, i = b3d._varint(hdr, j)
        elif wt == 1:
            i = j + 8
        elif wt == 5:
            i = j + 4
        else:
            ln, k = b3d._varint(hdr, j)
            i = k + ln
    raise AssertionError("no version field")


@pytest.mark.parametrize("variant, words", [
    ("truncated", "truncated"), ("header_cut", "does not fit"), ("old_version", "unsupported .b3d version 3"),
    ("old_magic", "magic 424242"), ("garbage", "b3d"), ("trailing", "trailing bytes"), ("tiny", "truncated"),
])
def test_malformed_files_are_one_clear_line(tmp_path, variant, words):
    data = FILE.read_bytes()
    bad = {"truncated": data[:-1000], "header_cut": data[:500_000], "old_version": _set_version(data, 3),
           "old_magic": struct.pack("<i", 424242) + data[4:4000], "garbage": b"\x07" * 8 + b"junk" * 100,
           "trailing": data + b"\x00" * 10, "tiny": data[:5]}[variant]
    (tmp_path / "bad.b3d").write_bytes(bad)
    with pytest.raises(SourceError) as exc:
        get_source("addbiomechanics").read(tmp_path / "bad.b3d", tmp_path)
    msg = str(exc.value)
    assert msg.startswith("bad.b3d: ") and words in msg and "\n" not in msg, msg


def test_addbiomechanics_own_figures_become_quality_metrics():
    """The .b3d's own per-trial marker RMS and root residuals reach the sequence's metrics row."""
    from pipeline.process import BuildConfig, process_motion
    from pipeline.quality.integration import sequence_metrics
    from pipeline.quality.metrics import CATALOG

    raw = get_source("addbiomechanics").read(FILE, B3D)[0]
    row = sequence_metrics(process_motion(raw, BuildConfig()))
    for k in ("addb_marker_rms_m", "addb_linear_residual_n", "addb_angular_residual_nm"):
        assert k in CATALOG and np.isfinite(row[k]) and row[k] > 0, (k, row.get(k))
