"""Simulated vs measured: a simulated pass's floor forces and joint torques against the force plates
and the inverse dynamics of the measured sequence it imitated (pure numpy).

Inputs (one motion, N frames at the canonical rate):

* simulated (``SimulationResult``, docs/simulation.md): ``grf_n`` (N, 2, 3) per foot and
  ``joint_torque_nm`` (N, 23, 3) are **means over the interval** ``[t_i, t_{i+1})``; the pose
  ``joint_rot_aa_rad`` is the simulator's state at ``t_i``;
* measured (``pipeline.sources.c3d.motion``, ``pipeline.inverse_dynamics``): plate forces per foot and
  inverse-dynamics torques are **samples at** ``t_i``, NaN where unknown.

So that both describe the same time span, measured samples are first averaged to the simulator's
intervals (``to_intervals``: ``(x_i + x_{i+1}) / 2``, the trapezoid mean over the interval; the last
frame keeps ``x_{N-1}``; NaN propagates). Without it a half-frame (17 ms at 30 FPS) lag would add
≈ 0.15 BW of error on every loading ramp.

Metrics (``validation_metrics``; the quality providers ``sim_vs_plate`` and ``sim_vs_id`` in
``metrics.py`` report them for every simulated pass of a motion with measured forces):

* ``grf_vs_plate_err_{left,right}_n_per_kg``: mean over frames where the plate value is known of
  ‖F_sim − F_plate‖ / body mass (N/kg; ImDy's GRF error);
* ``grf_peak_err_frac``: |peak F_z,sim − peak F_z,plate| / peak F_z,plate per foot (peaks over the
  frames where the plate value is known), the larger over the feet measured in stance (plate peak
  ≥ ``MIN_STANCE_PEAK_BW`` body weights);
* ``grf_impulse_err_frac``: per stance on a plate (a run of plate F_z > ``LOADED_N``, widened by
  ``IMPULSE_MARGIN_S`` on each side while the plate value is known, so an early or late simulated
  heel strike is inside), |∫F_z,sim − ∫F_z,plate| / ∫F_z,plate; the largest over stances and feet;
* ``torque_vs_id_rmse_nm_per_kg``: RMSE of the sagittal (flexion/extension) torques of hips, knees
  and ankles, both sides pooled, over frames where the inverse dynamics is known, / body mass;
  ``torque_vs_id_rmse_{hip,knee,ankle}_nm_per_kg`` per joint (both sides). Sagittal = projected on
  the pelvis's mediolateral axis, each torque with its own pose (``inverse_dynamics.sagittal``);
  both torques follow the simulator's convention (child frame, parent on child).
* ``cop_vs_plate_err_{left,right}_m``: mean horizontal distance between the simulated and the
  measured centre of pressure (m) over the frames where the plate carries at least
  ``COP_MIN_LOAD_BW`` body weights and both centres of pressure are defined (the plate's averaged
  to the intervals like the forces). It is what the ankle's torque error is made of: ID with the
  simulated forces but the plates' centres of pressure agrees with the plates' ID at the ankle to
  0.06–0.11 N·m/kg on the lab walks (docs/simulation.md "Validation").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

LOADED_N = 20.0
"""A foot is in stance on the plate while its measured vertical force exceeds this, N."""

MIN_STANCE_PEAK_BW = 0.25
"""Peak and impulse errors use feet (stances) whose plate peak reaches this × body weight."""

IMPULSE_MARGIN_S = 0.1
"""Each stance's impulse window is widened by this on both sides (while the plate is known), s."""

COP_MIN_LOAD_BW = 0.2
"""The centre-of-pressure error uses frames whose plate vertical force reaches this × body weight
(the centre of pressure of a light load is poorly defined, on the plate and in the simulation)."""

GRAVITY_MPS2 = 9.81

JOINT_GROUPS: dict[str, tuple[str, str]] = {
    "hip": ("left_hip", "right_hip"), "knee": ("left_knee", "right_knee"), "ankle": ("left_ankle", "right_ankle"),
}


def to_intervals(x: np.ndarray) -> np.ndarray:
    """Point samples at ``t_i`` (N, ...) → means over ``[t_i, t_{i+1})``: ``(x_i + x_{i+1}) / 2``;
    the last frame keeps ``x_{N-1}``. NaN propagates."""
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    if len(x) > 1:
        out[:-1] = 0.5 * (x[:-1] + x[1:])
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) runs of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def grf_validation(sim_grf_n: np.ndarray, plate_grf_n: np.ndarray, mass_kg: float, fps_hz: float,
                   align: bool = True) -> dict[str, float]:
    """GRF metrics of the module docstring (NaN when not measurable)."""
    sim = np.asarray(sim_grf_n, dtype=np.float64)
    plate = to_intervals(plate_grf_n) if align else np.asarray(plate_grf_n, dtype=np.float64)
    if sim.shape != plate.shape:
        raise ValueError(f"simulated GRF {sim.shape} and plate GRF {plate.shape} differ in shape")
    mass = float(mass_kg)
    bw = mass * GRAVITY_MPS2
    margin = int(round(IMPULSE_MARGIN_S * float(fps_hz)))
    out: dict[str, float] = {}
    peak_err, imp_err = [], []
    for f, side in enumerate(("left", "right")):
        known = np.isfinite(plate[:, f]).all(axis=-1)
        s = np.nan_to_num(sim[:, f])
        if known.any():
            err = np.linalg.norm(s[known] - plate[known, f], axis=-1) / mass
            out[f"grf_vs_plate_err_{side}_n_per_kg"] = float(err.mean())
        else:
            out[f"grf_vs_plate_err_{side}_n_per_kg"] = math.nan
            continue
        pz = np.where(known, plate[:, f, 2], np.nan)
        sz = s[:, 2]
        p_peak = float(np.nanmax(pz))
        if p_peak >= MIN_STANCE_PEAK_BW * bw:
            peak_err.append(abs(float(sz[known].max()) - p_peak) / p_peak)
        for a, b in _runs(np.nan_to_num(pz) > LOADED_N):
            if np.nanmax(pz[a:b]) < MIN_STANCE_PEAK_BW * bw:
                continue
            lo, hi = a, b
            while lo > 0 and a - lo < margin and known[lo - 1]:
                lo -= 1
            while hi < len(pz) and hi - b < margin and known[hi]:
                hi += 1
            j_plate = float(np.clip(pz[lo:hi], 0.0, None).sum())
            j_sim = float(np.clip(sz[lo:hi], 0.0, None).sum())
            imp_err.append(abs(j_sim - j_plate) / j_plate)
    out["grf_peak_err_frac"] = max(peak_err) if peak_err else math.nan
    out["grf_impulse_err_frac"] = max(imp_err) if imp_err else math.nan
    return out


def torque_validation(sim_torque_nm: np.ndarray, id_torque_nm: np.ndarray, mass_kg: float,
                      sim_rot_aa_rad: np.ndarray | None = None, id_rot_aa_rad: np.ndarray | None = None,
                      align: bool = True) -> dict[str, float]:
    """Sagittal hip/knee/ankle torque RMSE vs inverse dynamics (module docstring), N·m/kg.

    ``sim_rot_aa_rad`` / ``id_rot_aa_rad``: the poses the torques are expressed in (the
    simulator's states; the measured motion) for the pelvis-axis sagittal projection; without
    them the joint-local x components are compared."""
    from pipeline.inverse_dynamics import sagittal

    sim = sagittal(sim_torque_nm, sim_rot_aa_rad)
    ref = sagittal(id_torque_nm, id_rot_aa_rad)
    if align:
        ref = {k: to_intervals(v) for k, v in ref.items()}
    mass = float(mass_kg)
    sq: dict[str, list[np.ndarray]] = {g: [] for g in JOINT_GROUPS}
    for group, names in JOINT_GROUPS.items():
        for name in names:
            d = np.asarray(sim[name], np.float64) - ref[name]
            sq[group].append(d[np.isfinite(d)] ** 2)
    out: dict[str, float] = {}
    pooled = [x for g in sq.values() for x in g]
    allv = np.concatenate(pooled) if pooled else np.zeros(0)
    out["torque_vs_id_rmse_nm_per_kg"] = float(np.sqrt(allv.mean())) / mass if allv.size else math.nan
    for group, parts in sq.items():
        v = np.concatenate(parts)
        out[f"torque_vs_id_rmse_{group}_nm_per_kg"] = float(np.sqrt(v.mean())) / mass if v.size else math.nan
    return out


def cop_validation(sim_cop_m: np.ndarray, plate_cop_m: np.ndarray, plate_grf_n: np.ndarray,
                   mass_kg: float) -> dict[str, float]:
    """Per-foot mean horizontal centre-of-pressure distance, simulation vs plates (module
    docstring), m. ``sim_cop_m`` (N, 2, 3): interval means' centres of pressure (NaN where the
    simulated foot carries < 20 N); ``plate_cop_m``, ``plate_grf_n`` (N, 2, 3): samples at the frames,
    NaN where unknown. NaN for a foot without a qualifying frame."""
    sim = np.asarray(sim_cop_m, np.float64)
    plate = to_intervals(np.asarray(plate_cop_m, np.float64))
    fz = to_intervals(np.asarray(plate_grf_n, np.float64)[..., 2])
    if sim.shape != plate.shape or sim.ndim != 3 or sim.shape[1:] != (2, 3):
        raise ValueError(f"expected simulated and plate centres of pressure (N, 2, 3), got {sim.shape} and {plate.shape}")
    load = COP_MIN_LOAD_BW * float(mass_kg) * GRAVITY_MPS2
    out: dict[str, float] = {}
    for f, side in enumerate(("left", "right")):
        d = np.linalg.norm(sim[:, f, :2] - plate[:, f, :2], axis=-1)
        ok = np.isfinite(d) & (np.nan_to_num(fz[:, f]) >= load)
        out[f"cop_vs_plate_err_{side}_m"] = float(d[ok].mean()) if ok.any() else math.nan
    return out


def validation_metrics(arrays: Mapping[str, np.ndarray], mass_kg: float, fps_hz: float) -> dict[str, float]:
    """All validation metrics available from ``arrays`` (store/schema names of a simulated pass
    plus ``plate_grf_n``, ``plate_cop_m``, ``id_joint_torque_nm``; poses ``joint_rot_aa_rad`` (simulated) and
    ``ref_joint_rot_aa_rad`` (the measured motion) when present)."""
    out: dict[str, float] = {}
    if "grf_n" in arrays and "plate_grf_n" in arrays:
        out.update(grf_validation(arrays["grf_n"], arrays["plate_grf_n"], mass_kg, fps_hz))
    if "cop_m" in arrays and "plate_cop_m" in arrays and "plate_grf_n" in arrays:
        out.update(cop_validation(arrays["cop_m"], arrays["plate_cop_m"], arrays["plate_grf_n"], mass_kg))
    if "joint_torque_nm" in arrays and "id_joint_torque_nm" in arrays:
        out.update(torque_validation(arrays["joint_torque_nm"], arrays["id_joint_torque_nm"], mass_kg,
                                     arrays.get("joint_rot_aa_rad"), arrays.get("ref_joint_rot_aa_rad")))
    return out


__all__ = ["COP_MIN_LOAD_BW", "GRAVITY_MPS2", "IMPULSE_MARGIN_S", "JOINT_GROUPS", "LOADED_N", "MIN_STANCE_PEAK_BW",
           "cop_validation", "grf_validation",
           "to_intervals", "torque_validation", "validation_metrics"]
