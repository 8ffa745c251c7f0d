"""Per-foot GRF (pipeline/lab/foot_assignment.py) on synthetic walks with known foot trajectories and plate loads."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.lab import foot_assignment as fa

FPS = 30.0
N = 70
LABELS = ("LHEE", "LTOE", "LANK", "RHEE", "RTOE", "RANK", "C7")
UP = np.array([0.0, 0.0, 1.0])


def _plate(x0, x1, y0=-0.25, y1=0.25):
    # CORNERS order as in C3D files: c1 - c2 = +x, c1 - c4 = +y would make z up; use the lab order c1..c4.
    return np.array([[x1, y1, 0.0], [x0, y1, 0.0], [x0, y0, 0.0], [x1, y0, 0.0]])


P1, P2 = _plate(0.0, 0.5), _plate(0.6, 1.1)


def _foot(n=N, heel=(5.0, 0.0), stance=None, swing_z=0.3):
    """(N, 3, 3) heel/toe/ankle: planted at ``heel`` during ``stance`` (a, b), else moving fast and high."""
    out = np.empty((n, 3, 3))
    hx, hy = heel
    for k in range(n):
        if stance is not None and stance[0] <= k < stance[1]:
            x, z = hx, 0.0
        else:
            x, z = hx + 0.12 * (k - (stance[0] if stance else 0)), swing_z  # 3.6 m/s swing
        out[k, 0] = [x, hy, 0.06 + z]
        out[k, 1] = [x + 0.18, hy, 0.04 + z]
        out[k, 2] = [x + 0.03, hy + 0.03, 0.09 + z]
    return out


def _load(stance, cop_xy, fz_peak=700.0, tz=2.0, shear=(40.0, -15.0), n=N):
    """Plate force (N, 3) and COP (N, 3), free moment tz (N,) for a stance (a, b); zero elsewhere."""
    f = np.zeros((n, 3))
    a, b = stance
    s = np.sin(np.linspace(0, np.pi, b - a + 2)[1:-1])
    f[a:b, 2] = fz_peak * s
    f[a:b, 0] = shear[0] * s
    f[a:b, 1] = shear[1] * s
    cop = np.zeros((n, 3))
    cop[:, :2] = cop_xy
    t = np.where(f[:, 2] > 0, tz, 0.0)
    return f, cop, t


def _plate_load(corners, f, cop, tz):
    c = corners.mean(axis=0)
    m = np.cross(cop - c, f) + tz[:, None] * UP
    return fa.PlateLoad(force_n=f, moment_centre_nm=m, centre_m=c, corners_m=corners)


def _markers(left, right):
    n = left.shape[0]
    mk = np.concatenate([left, right, np.tile([[0.5, 0.0, 1.4]], (n, 1, 1))], axis=1)
    return mk


def _walk():
    left = _foot(heel=(0.1, 0.05), stance=(10, 40))
    right = _foot(heel=(0.75, -0.05), stance=(32, 60))
    # right foot swings low over plate 1 while the left stands on it: the speed gate must ignore it
    right[:32, :, 0] = np.linspace(-1.5, 0.7, 32)[:, None] + np.array([0.0, 0.18, 0.03])
    right[:32, :, 2] = np.array([0.06, 0.04, 0.09]) + 0.02
    f1, c1, t1 = _load((10, 40), (0.2, 0.05), 720.0, 2.0)
    f2, c2, t2 = _load((32, 60), (0.85, -0.05), 650.0, -1.5)
    plates = [_plate_load(P1, f1, c1, t1), _plate_load(P2, f2, c2, t2)]
    return _markers(left, right), plates, (f1, c1, t1), (f2, c2, t2)


def test_label_variants():
    cases = {
        "LHEE": ("left", "HEE"), "R.Heel": ("right", "HEEL"), "L_HEEL": ("left", "HEEL"), "Heel_L": ("left", "HEEL"),
        "Bob:RTOE": ("right", "TOE"), "LeftHeel": ("left", "HEEL"), "right-toe": ("right", "TOE"), "C7": (None, "C7"),
    }
    for lab, want in cases.items():
        assert fa.split_label(lab) == want, lab
    fm = fa.find_foot_markers(["Sub:LCAL", "Sub:LMT1", "Sub:LMT5", "Sub:LLMAL", "Sub:LMMAL", "R.Heel", "R.Toe"])
    assert fm.labels["left"] == {"heel": ("Sub:LCAL",), "toe": ("Sub:LMT1", "Sub:LMT5"), "ankle": ("Sub:LLMAL", "Sub:LMMAL")}
    assert fm.labels["right"]["heel"] == ("R.Heel",) and fm.labels["right"]["ankle"] == ()
    assert not fm.missing and any("right foot: no ankle" in w for w in fm.warnings)
    fm = fa.find_foot_markers(["LHEE", "LTOE", "RKNE", "RANK"])
    assert set(fm.missing) == {"right"} and "right foot: no heel or toe marker" in fm.missing["right"]


def test_footprint_distance():
    d = fa.footprint_distance(np.array([[0.25, 0.0], [0.55, 0.0], [0.25, 0.35], [-0.03, -0.29], [np.nan, 0]]), P1)
    np.testing.assert_allclose(d[:4], [0.0, 0.05, 0.10, 0.05], atol=1e-12)
    assert np.isnan(d[4])
    # the opposite corner order (plate z up) gives the same footprint
    np.testing.assert_allclose(fa.footprint_distance(np.array([[0.25, 0.0], [0.55, 0.0]]), P1[::-1]), [0.0, 0.05])


def test_moment_transfer_matches_point_forces():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(5, 3))
    f = rng.normal(size=(5, 3)) * 100
    a, p = rng.normal(size=3), rng.normal(size=3)
    m_a = np.cross(r - a, f).sum(axis=0)
    m_p = np.cross(r - p, f).sum(axis=0)
    np.testing.assert_allclose(fa.transfer_moment(m_a, a, p, f.sum(axis=0)), m_p, atol=1e-10)
    # wrong sign convention would fail
    assert np.abs(m_a + np.cross(p - a, f.sum(axis=0)) - m_p).max() > 1.0


def test_two_plate_walk_assignment_and_sums():
    mk, plates, (f1, c1, t1), (f2, _, _) = _walk()
    out = fa.foot_grf(mk, LABELS, plates, FPS, subject_mass_kg=70.0)
    assert [(iv.plate, iv.start, iv.stop, iv.status) for iv in out.intervals] == [(0, 10, 40, "left"), (1, 32, 60, "right")]
    assert not out.conflict.any()
    assert (out.assignment[10:40, 0] == fa.LEFT).all() and (out.assignment[32:60, 1] == fa.RIGHT).all()
    assert (out.assignment[:10, 0] == fa.UNLOADED).all()
    both = np.isfinite(out.force_n).all(axis=(1, 2))
    assert both[10:60].all()
    np.testing.assert_allclose(out.force_n[both, 0], f1[both], atol=1e-9)
    np.testing.assert_allclose(out.force_n[both, 1], f2[both], atol=1e-9)
    np.testing.assert_allclose(out.force_n[both].sum(axis=1), out.total_force_n[both], atol=1e-9)
    loaded = f1[:, 2] > 20
    np.testing.assert_allclose(out.cop_m[loaded, 0, :2], c1[loaded, :2], atol=1e-9)
    np.testing.assert_allclose(out.free_moment_nm[loaded, 0], 2.0, atol=1e-9)
    loaded2 = f2[:, 2] > 20
    np.testing.assert_allclose(out.free_moment_nm[loaded2, 1], -1.5, atol=1e-9)
    # moment about the ankle marker projected on the floor
    p = mk[:, 2].copy()
    p[:, 2] = 0.0
    want = np.cross(c1 - p, f1) + t1[:, None] * UP
    np.testing.assert_allclose(out.moment_nm[both, 0], want[both], atol=1e-9)
    np.testing.assert_allclose(out.foot_point_m[:, 0], p, atol=1e-12)
    # Zell F_c layout and contact labels
    fc = out.zell_fc()
    assert fc.shape == (N, 12)
    np.testing.assert_allclose(fc[both, 0:3], f1[both], atol=1e-9)
    np.testing.assert_allclose(fc[both, 9:12], out.moment_nm[both, 1], atol=1e-9)
    assert (out.contact[:, 0] == (np.arange(N) >= 10) & (np.arange(N) < 40) & (f1[:, 2] > 10)).sum() > 25
    assert out.contact[15:35, 0].all() and not out.contact[45:, 0].any() and out.contact[35:55, 1].all()
    assert out.body_mass_kg == 70.0 and out.body_mass_source == "file"
    assert "body_mass_kg" in out.normalization


def test_swapped_plates_follow_the_feet():
    """Loads swapped between plates: the assignment must follow the markers, not the plate order."""
    left = _foot(heel=(0.75, 0.05), stance=(10, 40))
    right = _foot(heel=(0.1, -0.05), stance=(32, 60))
    f1, c1, t1 = _load((32, 60), (0.2, -0.05))
    f2, c2, t2 = _load((10, 40), (0.85, 0.05))
    out = fa.foot_grf(_markers(left, right), LABELS, [_plate_load(P1, f1, c1, t1), _plate_load(P2, f2, c2, t2)], FPS)
    assert [iv.status for iv in out.intervals] == ["right", "left"]
    np.testing.assert_allclose(out.force_n[15:35, 0], f2[15:35], atol=1e-9)


def test_both_feet_on_one_plate_is_flagged():
    left = _foot(heel=(0.05, 0.1), stance=(10, 40))
    right = _foot(heel=(0.2, -0.1), stance=(20, 50))
    f1, c1, t1 = _load((10, 50), (0.2, 0.0), 900.0)
    out = fa.foot_grf(_markers(left, right), LABELS, [_plate_load(P1, f1, c1, t1)], FPS)
    (iv,) = out.intervals
    assert iv.status == "conflict" and "both feet inside" in iv.reason
    assert out.conflict[10:50, 0].all() and not out.conflict[:10, 0].any()
    assert np.isnan(out.force_n[10:50]).all() and np.isnan(out.moment_nm[10:50]).all()
    assert not out.contact[10:50].any()
    np.testing.assert_allclose(out.total_force_n, f1)  # the total is still measured
    assert any("both feet inside" in w for w in out.warnings)


def test_near_margin_and_no_foot():
    left = _foot(heel=(-0.25, 0.0), stance=(10, 40))  # toe at x = -0.07: 7 cm outside plate 1
    right = _foot(heel=(3.0, 0.0), stance=(10, 40))
    f1, c1, t1 = _load((10, 40), (0.01, 0.0))
    out = fa.foot_grf(_markers(left, right), LABELS, [_plate_load(P1, f1, c1, t1)], FPS)
    assert out.intervals[0].status == "left" and "within 0.1 m" in out.intervals[0].reason
    far = _foot(heel=(-0.6, 0.0), stance=(10, 40))
    out = fa.foot_grf(_markers(far, right), LABELS, [_plate_load(P1, f1, c1, t1)], FPS)
    assert out.intervals[0].status == "no_foot" and np.isnan(out.force_n[10:40]).all()


def test_missing_side_is_flagged_not_guessed():
    mk, plates, *_ = _walk()
    labels = ("LHEE", "LTOE", "LANK", "RKNE", "RTIB", "RANK", "C7")
    out = fa.foot_grf(mk, labels, plates, FPS)
    assert "right" in out.markers.missing and any("right foot: no heel or toe" in w for w in out.warnings)
    assert np.isnan(out.force_n[:, 1]).all()
    assert [iv.status for iv in out.intervals] == ["missing_markers", "missing_markers"]
    assert np.isnan(out.force_n[10:40, 0]).all()
    # markers present but NaN (occluded) during the interval behave the same
    mk2 = mk.copy()
    mk2[5:45, 3:5] = np.nan
    out = fa.foot_grf(mk2, LABELS, plates, FPS)
    assert out.intervals[0].status == "missing_markers"


def test_off_plate_ground_contact_is_unknown():
    left = _foot(heel=(-1.5, 0.0), stance=(0, 30))  # standing on the floor, no plate
    right = _foot(heel=(0.75, 0.0), stance=(0, N))
    f2, c2, t2 = _load((0, N), (0.85, 0.0))
    out = fa.foot_grf(_markers(left, right), LABELS, [_plate_load(P1, 0 * f2, c2, 0 * t2), _plate_load(P2, f2, c2, t2)], FPS)
    assert out.off_plate[:29, 0].all() and np.isnan(out.force_n[:29, 0]).all()  # frame 29: lift-off speed
    assert np.isfinite(out.force_n[35:, 0]).all() and (out.force_n[35:, 0] == 0).all()


def test_body_mass_quiet_standing_and_default():
    n = 120
    left = _foot(n, heel=(0.1, 0.0), stance=(0, n))
    right = _foot(n, heel=(0.75, 0.0), stance=(0, n))
    rng = np.random.default_rng(0)
    f1 = np.zeros((n, 3))
    f2 = np.zeros((n, 3))
    f1[:, 2] = 350 + rng.normal(0, 2, n)
    f2[:, 2] = 340 + rng.normal(0, 2, n)
    f1[80:, 2] += np.linspace(0, 300, n - 80)  # weight shift after 80 frames: not steady
    f2[80:, 2] -= np.linspace(0, 300, n - 80) * 0.2
    c1 = np.tile([0.2, 0.0, 0.0], (n, 1))
    c2 = np.tile([0.85, 0.0, 0.0], (n, 1))
    plates = [_plate_load(P1, f1, c1, np.zeros(n)), _plate_load(P2, f2, c2, np.zeros(n))]
    out = fa.foot_grf(_markers(left, right), LABELS, plates, FPS)
    assert out.body_mass_source.startswith("quiet_standing")
    assert abs(out.body_mass_kg - 690 / fa.G) < 0.5
    mk, wplates, *_ = _walk()
    out = fa.foot_grf(mk, LABELS, wplates, FPS, cfg=fa.FootConfig(default_body_mass_kg=81.0))
    assert (out.body_mass_kg, out.body_mass_source) == (81.0, "default")
    assert fa.estimate_body_mass(None, np.full(60, 700.0), np.zeros(60, bool), FPS)[1] == "default"


def test_config_validation():
    with pytest.raises(ValueError):
        fa.FootConfig(contact_on_n=10, contact_off_n=20)
