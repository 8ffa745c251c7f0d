"""MJCF humanoid for the SMPL 24-joint tree, built per subject from a ``skeleton.Skeleton``.

Frames (see docs/simulation.md)
-------------------------------
* MuJoCo's world frame *is* the canonical world frame: z up, metres, floor plane at z = 0,
  gravity (0, 0, −9.81) m/s².
* Every body frame is the **template-aligned** frame of its SMPL joint: body ``j`` sits at
  ``Skeleton.offsets_m[j]`` in its parent's frame with no extra rotation, and its geoms, inertial
  frame and sole points are given in template coordinates (x left, y up, z forward). Hence
  MuJoCo's ``xquat`` of body ``j`` equals the canonical *global* rotation of joint ``j``, the root
  (free joint) quaternion equals the canonical pelvis rotation (template → z-up world) and every
  ball-joint quaternion equals the canonical *local* joint rotation — no conversion.
* The free joint's position is the pelvis joint position (``CanonicalMotion.root_pos_m``).

Bodies and mass
---------------
24 bodies named ``skeleton.JOINT_NAMES``; body ``j`` is the segment driven by joint ``j`` (e.g.
``left_hip`` = thigh, ``left_knee`` = shank, ``left_ankle`` = rear/mid-foot, ``left_foot`` = toes).
Segment masses, centre-of-mass positions and radii of gyration follow de Leva (1996, J Biomech
29:1223, Table 4; male, female, neutral = their mean), scaled by the subject's mass and segment
lengths; see ``SEGMENT_TABLE`` and docs/simulation.md for the mapping of de Leva's 14 segments to
SMPL's 24 bodies. Masses are renormalised to sum exactly to the subject mass.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import mujoco
import numpy as np

from pipeline import skeleton as sk

GRAVITY_MPS2 = 9.81
"""|g| used by the simulator (same value as ``pipeline.demo`` flight phases), m/s²."""

_NAN = float("nan")

# --- de Leva (1996) Table 4 (adjusted Zatsiorsky–Seluyanov) ------------------------------------
# segment: (mass % male, mass % female, CM % from proximal male, female,
#           r_sagittal %, r_transverse %, r_longitudinal % (male), same (female))
_DE_LEVA: dict[str, tuple[float, float, float, float, tuple[float, float, float], tuple[float, float, float]]] = {
    "head": (6.94, 6.68, 59.76, 58.94, (36.2, 37.6, 31.2), (27.1, 29.5, 26.1)),
    # trunk segments: only the mass fractions are used (their inertia is a solid box, see below)
    "upper_trunk": (15.96, 15.45, _NAN, _NAN, (_NAN,) * 3, (_NAN,) * 3),
    "mid_trunk": (16.33, 14.65, _NAN, _NAN, (_NAN,) * 3, (_NAN,) * 3),
    "lower_trunk": (11.17, 12.47, _NAN, _NAN, (_NAN,) * 3, (_NAN,) * 3),
    "upper_arm": (2.71, 2.55, 57.72, 57.54, (28.5, 26.9, 15.8), (27.8, 26.0, 14.8)),
    "forearm": (1.62, 1.38, 45.74, 45.59, (27.6, 26.5, 12.1), (26.1, 25.7, 9.4)),
    "hand": (0.61, 0.56, 79.00, 74.74, (62.8, 51.3, 40.1), (53.1, 45.4, 33.5)),
    "thigh": (14.16, 14.78, 40.95, 36.12, (32.9, 32.9, 14.9), (36.9, 36.4, 16.2)),
    "shank": (4.33, 4.81, 44.59, 44.16, (25.5, 24.9, 10.3), (27.1, 26.7, 9.3)),
    "foot": (1.37, 1.29, 44.15, 40.14, (25.7, 24.5, 12.4), (29.9, 27.9, 13.9)),
}

# SMPL body → (de Leva segment, share of that segment's mass)
SEGMENT_TABLE: dict[str, tuple[str, float]] = {
    "pelvis": ("lower_trunk", 1.0),
    "spine1": ("mid_trunk", 0.65),
    "spine2": ("mid_trunk", 0.35),
    "spine3": ("upper_trunk", 0.80),
    "left_collar": ("upper_trunk", 0.10),
    "right_collar": ("upper_trunk", 0.10),
    "neck": ("head", 0.15),
    "head": ("head", 0.85),
    "left_hip": ("thigh", 1.0),
    "right_hip": ("thigh", 1.0),
    "left_knee": ("shank", 1.0),
    "right_knee": ("shank", 1.0),
    "left_ankle": ("foot", 0.80),
    "right_ankle": ("foot", 0.80),
    "left_foot": ("foot", 0.20),
    "right_foot": ("foot", 0.20),
    "left_shoulder": ("upper_arm", 1.0),
    "right_shoulder": ("upper_arm", 1.0),
    "left_elbow": ("forearm", 1.0),
    "right_elbow": ("forearm", 1.0),
    "left_wrist": ("hand", 0.70),
    "right_wrist": ("hand", 0.70),
    "left_hand": ("hand", 0.30),
    "right_hand": ("hand", 0.30),
}
"""How de Leva's segments are shared among SMPL's bodies (lower trunk → pelvis, middle trunk →
spine1/spine2, upper trunk → spine3 and the shoulder girdles (collars), head+neck → neck/head,
foot → rear/mid-foot (ankle body) and toes (foot body), hand → palm (wrist body) and fingers)."""

# Ball-joint range: maximal rotation angle from the rest (T-)pose, degrees (MuJoCo ball joints
# limit the rotation angle only). Generous: they must not fight the reference, only stop
# pathological poses after a disturbance.
JOINT_LIMIT_DEG: dict[str, float] = {
    "left_hip": 140.0, "right_hip": 140.0, "spine1": 70.0, "left_knee": 165.0, "right_knee": 165.0,
    "spine2": 70.0, "left_ankle": 90.0, "right_ankle": 90.0, "spine3": 70.0, "left_foot": 80.0,
    "right_foot": 80.0, "neck": 80.0, "left_collar": 60.0, "right_collar": 60.0, "head": 80.0,
    "left_shoulder": 179.0, "right_shoulder": 179.0, "left_elbow": 170.0, "right_elbow": 170.0,
    "left_wrist": 120.0, "right_wrist": 120.0, "left_hand": 90.0, "right_hand": 90.0,
}

# Per-joint torque limit (norm of the 3-vector), N·m per kg of body mass.
TORQUE_LIMIT_NM_PER_KG: dict[str, float] = {
    "left_hip": 8.0, "right_hip": 8.0, "spine1": 8.0, "left_knee": 8.0, "right_knee": 8.0,
    "spine2": 8.0, "left_ankle": 6.0, "right_ankle": 6.0, "spine3": 8.0, "left_foot": 3.0,
    "right_foot": 3.0, "neck": 2.0, "left_collar": 3.0, "right_collar": 3.0, "head": 1.5,
    "left_shoulder": 3.0, "right_shoulder": 3.0, "left_elbow": 2.0, "right_elbow": 2.0,
    "left_wrist": 1.0, "right_wrist": 1.0, "left_hand": 0.5, "right_hand": 0.5,
}
"""Torque limits (N·m/kg): ≈ 2× the peak net joint moments of running and jumping (hip/knee/ankle
≈ 3–4 N·m/kg, Winter 2009); they only cap controller spikes after disturbances."""


@dataclass(frozen=True)
class HumanoidParams:
    """Contact and joint parameters of the generated MJCF (documented in docs/simulation.md).

    Attributes:
        friction: sliding friction coefficient of body–floor contacts (MuJoCo ``friction[0]``).
        solref: contact (time constant s, damping ratio); time constant ≥ 2 physics steps.
            0.02 s (a soft-tissue heel pad; 0.01 s gave ≈ 1 BW higher landing peaks at 1.6 m/s).
        solimp: contact impedance (dmin, dmax, width m, midpoint, power).
        armature: joint armature (reflected rotor inertia added to every ball dof), kg·m². A
            model term for numerical stability of the light distal segments (toes ≈ 2e-4 kg·m²,
            fingers) under zero-order-hold torques; it adds ``armature · q̈`` to the torque each
            joint needs, which the controller's inverse dynamics adds explicitly (``mj_rne`` leaves
            armature out), so the recorded torque remains the actuator torque applied. 0.01 kg·m² is ≈ 1/10 of
            a shank's and ≈ 50× a toe segment's inertia.
        damping: joint viscous damping, N·m·s/rad (0: idem).
        limit_solref: joint-limit softness (time constant s, damping ratio).
        margin: contact margin of body geoms, m: a body–floor contact is active (can push)
            within this distance of geometric touch — a thin compliant sole/soft-tissue layer
            that gives a loaded flat foot a full support polygon instead of 1–2 touching corners.
    """

    friction: float = 1.0
    solref: tuple[float, float] = (0.02, 1.0)
    solimp: tuple[float, float, float, float, float] = (0.95, 0.99, 0.001, 0.5, 2.0)
    armature: float = 0.01
    damping: float = 0.0
    limit_solref: tuple[float, float] = (0.02, 1.0)
    margin: float = 0.005


@dataclass(frozen=True)
class Humanoid:
    """A compiled humanoid and the index maps the engine needs.

    Attributes:
        model: compiled ``mujoco.MjModel``.
        xml: the MJCF text it was compiled from.
        skeleton: the subject skeleton (template offsets).
        mass_kg: subject mass (= total model mass), kg.
        gender: ``male`` | ``female`` | ``neutral`` (which de Leva column).
        body_ids: (24,) MuJoCo body id of each SMPL joint's body.
        sole_points_local: (2, 6, 3) body-frame positions of the 6 sole corners per foot
            (left, right): 4 rear/mid-foot corners (heel and ball, medial/lateral, on the ankle
            body) and 2 toe-tip corners (on the foot body), metres.
        sole_point_body: (2, 6) SMPL joint index of the body each sole corner belongs to.
        torque_limit_nm: (23,) torque-norm limit of each ball joint (SMPL order 1..23), N·m.
        qpos_index: (99,) MuJoCo qpos address of each entry of the SMPL-ordered layout
            ``[pelvis pos (3), quats of joints 0..23 (24·4)]`` (MuJoCo orders bodies depth-first).
        dof_index: (75,) MuJoCo dof address of each entry of ``[pelvis lin (3), ang. velocities of
            joints 0..23 (24·3)]``.
    """

    model: mujoco.MjModel
    xml: str
    skeleton: sk.Skeleton
    mass_kg: float
    gender: str
    body_ids: np.ndarray
    sole_points_local: np.ndarray
    sole_point_body: np.ndarray
    torque_limit_nm: np.ndarray
    qpos_index: np.ndarray
    dof_index: np.ndarray

    def qpos_to_mj(self, qpos_smpl: np.ndarray) -> np.ndarray:
        """SMPL-ordered qpos (..., 99) → MuJoCo layout."""
        out = np.empty_like(qpos_smpl)
        out[..., self.qpos_index] = qpos_smpl
        return out

    def qpos_from_mj(self, qpos_mj: np.ndarray) -> np.ndarray:
        return qpos_mj[..., self.qpos_index]

    def dof_to_mj(self, v_smpl: np.ndarray) -> np.ndarray:
        """SMPL-ordered dof vector (..., 75) → MuJoCo layout."""
        out = np.empty_like(v_smpl)
        out[..., self.dof_index] = v_smpl
        return out

    def dof_from_mj(self, v_mj: np.ndarray) -> np.ndarray:
        return v_mj[..., self.dof_index]

    @property
    def weight_n(self) -> float:
        return float(self.mass_kg * GRAVITY_MPS2)


def _f(v) -> str:
    return " ".join(f"{float(x):.9g}" for x in np.atleast_1d(v))


def _quat_z_to(d: np.ndarray) -> np.ndarray:
    """(w, x, y, z) quaternion rotating +z onto the direction ``d``."""
    d = np.asarray(d, float)
    d = d / max(np.linalg.norm(d), 1e-12)
    z = np.array([0.0, 0.0, 1.0])
    c = float(z @ d)
    if c < -1 + 1e-9:
        return np.array([0.0, 1.0, 0.0, 0.0])
    axis = np.cross(z, d)
    q = np.array([1.0 + c, *axis])
    return q / np.linalg.norm(q)


def segment_masses(mass_kg: float, gender: str = "neutral") -> dict[str, float]:
    """Mass of each SMPL body, kg (de Leva 1996 fractions, renormalised to sum to ``mass_kg``)."""
    frac = {}
    for body, (seg, share) in SEGMENT_TABLE.items():
        m, f = _DE_LEVA[seg][0], _DE_LEVA[seg][1]
        pct = m if gender == "male" else f if gender == "female" else 0.5 * (m + f)
        frac[body] = pct * share
    total = sum(frac.values())
    return {b: mass_kg * v / total for b, v in frac.items()}


def _segment_params(seg: str, gender: str) -> tuple[float, np.ndarray]:
    """(CM fraction from proximal end, radii of gyration fractions (sag, trans, long))."""
    row = _DE_LEVA[seg]
    cm = {"male": row[2], "female": row[3]}.get(gender, 0.5 * (row[2] + row[3])) / 100.0
    rm, rf = np.array(row[4]), np.array(row[5])
    r = {"male": rm, "female": rf}.get(gender, 0.5 * (rm + rf)) / 100.0
    return cm, r


def _children(j: int) -> list[int]:
    return [c for c in range(sk.N_JOINTS) if sk.PARENTS[c] == j]


def build_mjcf(
    skeleton: sk.Skeleton, mass_kg: float, gender: str = "neutral", params: HumanoidParams | None = None,
    physics_dt_s: float = 1.0 / 480.0,
) -> tuple[str, dict]:
    """MJCF text of the humanoid and a dict of derived geometry (sole corners, limits)."""
    p = params or HumanoidParams()
    if not np.isfinite(mass_kg) or mass_kg <= 0:
        raise ValueError(f"mass_kg must be finite and > 0, got {mass_kg!r}")
    H = float(skeleton.height_m)
    off = skeleton.offsets_m
    masses = segment_masses(mass_kg, gender)
    feet = sk.foot_point_offsets(skeleton)  # (4,3): l_heel (ankle), l_toe (ball), r_heel, r_toe
    names = sk.JOINT_NAMES

    # --- per body: geoms (template coords relative to the body origin) and inertial ------------
    geoms: dict[int, list[str]] = {j: [] for j in range(sk.N_JOINTS)}
    inertial: dict[int, str] = {}
    sole_local = np.zeros((2, 6, 3))
    sole_body = np.zeros((2, 6), dtype=int)

    def cap(j: int, a: np.ndarray, b: np.ndarray, r: float) -> None:
        geoms[j].append(f'<geom type="capsule" fromto="{_f(a)} {_f(b)}" size="{r:.6g}"/>')

    def box(j: int, c: np.ndarray, half: np.ndarray) -> None:
        geoms[j].append(f'<geom type="box" pos="{_f(c)}" size="{_f(half)}"/>')

    def limb_inertial(j: int, a: np.ndarray, b: np.ndarray, seg: str) -> None:
        """COM at de Leva's fraction along a → b, radii of gyration × |b − a|."""
        cm, r = _segment_params(seg, gender)
        m = masses[names[j]]
        L = float(np.linalg.norm(b - a))
        pos = a + cm * (b - a)
        r_t = 0.5 * (r[0] + r[1]) * L
        r_l = r[2] * L
        diag = m * np.array([r_t**2, r_t**2, r_l**2])
        inertial[j] = (f'<inertial pos="{_f(pos)}" quat="{_f(_quat_z_to(b - a))}" mass="{m:.9g}" '
                       f'diaginertia="{_f(diag)}"/>')

    def box_inertial(j: int, c: np.ndarray, half: np.ndarray) -> None:
        m = masses[names[j]]
        a, b, cc = 2 * half
        diag = m / 12.0 * np.array([b * b + cc * cc, a * a + cc * cc, a * a + b * b])
        inertial[j] = f'<inertial pos="{_f(c)}" mass="{m:.9g}" diaginertia="{_f(diag)}"/>'

    z = np.zeros(3)
    # legs
    for side, (hip, knee, ankle, ball) in enumerate(((1, 4, 7, 10), (2, 5, 8, 11))):
        r_thigh, r_shank = 0.032 * H, 0.024 * H
        cap(hip, z, off[knee], r_thigh)
        limb_inertial(hip, z, off[knee], "thigh")
        cap(knee, z, off[ankle] * (1 - 0.35 * r_shank / np.linalg.norm(off[ankle])), r_shank)
        limb_inertial(knee, z, off[ankle], "shank")
        # rear/mid-foot box on the ankle body: heel → ball, sole plane → ankle height
        heel = feet[2 * side]  # relative to ankle
        ball_rel = off[ball]  # ball joint relative to ankle
        sole_y = heel[1]
        half_w = 0.026 * H
        z0, z1 = heel[2], ball_rel[2]
        x_mid = 0.5 * ball_rel[0]
        # the box bottom sits `margin` above the sole plane: contacts engage at the margin, so the
        # effective (loaded) sole is the template sole plane
        bottom = sole_y + p.margin
        c = np.array([x_mid, 0.5 * (bottom + 0.0), 0.5 * (z0 + z1)])
        half = np.array([half_w, 0.5 * (0.0 - bottom), 0.5 * (z1 - z0)])
        box(ankle, c, half)
        # foot inertial: de Leva's CM fraction along heel → toe tip, mid-height of the box
        toe_tip = ball_rel + feet[2 * side + 1]
        cm, r = _segment_params("foot", gender)
        L = float(np.linalg.norm(toe_tip - heel))
        mfoot = masses[names[ankle]]
        pos = heel + cm * (toe_tip - heel)
        pos[1] = c[1]
        r_t, r_l = 0.5 * (r[0] + r[1]) * L, r[2] * L
        inertial[ankle] = (f'<inertial pos="{_f(pos)}" quat="{_f(_quat_z_to(toe_tip - heel))}" mass="{mfoot:.9g}" '
                           f'diaginertia="{_f(mfoot * np.array([r_t**2, r_t**2, r_l**2]))}"/>')
        for k, (xs, zz) in enumerate(((-1, z0), (1, z0), (-1, z1), (1, z1))):
            sole_local[side, k] = [x_mid + xs * half_w, sole_y, zz]
            sole_body[side, k] = ankle
        # toes box on the foot (ball) body: ball → toe tip, sole → 0.02 H above the sole
        tip = feet[2 * side + 1]  # relative to ball
        t_sole = tip[1]
        tc = np.array([0.0, t_sole + p.margin + 0.01 * H, 0.5 * tip[2]])
        th = np.array([half_w, 0.01 * H, 0.5 * tip[2]])
        box(ball, tc, th)
        box_inertial(ball, tc, th)
        for k, xs in enumerate((-1, 1)):
            sole_local[side, 4 + k] = [xs * half_w, t_sole, tip[2]]
            sole_body[side, 4 + k] = ball
    # trunk: boxes spanning each trunk body up to its (midline) child
    trunk = {0: (3, 0.085, 0.055), 3: (6, 0.075, 0.050), 6: (9, 0.080, 0.050), 9: (12, 0.085, 0.050)}
    for j, (child, hw, hd) in trunk.items():
        top = off[child]
        bottom = np.array([0.0, -0.05 * H, 0.0]) if j == 0 else z
        c = 0.5 * (bottom + top)
        half = np.array([hw * H, max(0.5 * abs(top[1] - bottom[1]), 0.012 * H), hd * H])
        c[2] = 0.5 * (bottom[2] + top[2])
        box(j, c, half)
        box_inertial(j, c, half)
    # neck, head
    cap(12, z, off[15], 0.025 * H)
    limb_inertial(12, z, off[15], "head")
    head_c = np.array([0.0, 0.055 * H, 0.012 * H])
    geoms[15].append(f'<geom type="ellipsoid" pos="{_f(head_c)}" size="{_f(np.array([0.048, 0.062, 0.058]) * H)}"/>')
    mh = masses["head"]
    ax = np.array([0.048, 0.062, 0.058]) * H
    inertial[15] = (f'<inertial pos="{_f(head_c)}" mass="{mh:.9g}" diaginertia="'
                    f'{_f(mh / 5 * np.array([ax[1]**2 + ax[2]**2, ax[0]**2 + ax[2]**2, ax[0]**2 + ax[1]**2]))}"/>')
    # arms
    for collar, sh, el, wr, hand in ((13, 16, 18, 20, 22), (14, 17, 19, 21, 23)):
        cap(collar, z, off[sh], 0.022 * H)
        # collar inertial: COM halfway, small
        mcol = masses[names[collar]]
        L = float(np.linalg.norm(off[sh]))
        inertial[collar] = (f'<inertial pos="{_f(0.5 * off[sh])}" quat="{_f(_quat_z_to(off[sh]))}" mass="{mcol:.9g}" '
                            f'diaginertia="{_f(mcol * np.array([(0.3 * L)**2, (0.3 * L)**2, (0.15 * L)**2]))}"/>')
        cap(sh, z, off[el], 0.022 * H)
        limb_inertial(sh, z, off[el], "upper_arm")
        cap(el, z, off[wr], 0.018 * H)
        limb_inertial(el, z, off[wr], "forearm")
        # palm on the wrist body (wrist → hand joint), fingers on the hand body (hand → +0.05 H)
        palm = off[hand]
        pc = 0.5 * palm
        ph = np.array([abs(palm[0]) * 0.5 + 0.005 * H, 0.012 * H, 0.028 * H])
        box(wr, pc, ph)
        limb_inertial(wr, z, palm, "hand")
        fingers = palm / max(np.linalg.norm(palm), 1e-9) * 0.05 * H
        cap(hand, z, fingers, 0.01 * H)
        limb_inertial(hand, z, fingers, "hand")

    # --- assemble the tree ----------------------------------------------------------------------
    lines: list[str] = []

    def emit(j: int, indent: str) -> None:
        pos = z if j == 0 else off[j]
        lines.append(f'{indent}<body name="{names[j]}" pos="{_f(pos)}">')
        if j == 0:
            lines.append(f'{indent}  <freejoint name="root"/>')
        else:
            lim = JOINT_LIMIT_DEG[names[j]]
            lines.append(f'{indent}  <joint name="{names[j]}" type="ball" range="0 {lim:.6g}"/>')
        lines.append(f"{indent}  {inertial[j]}")
        for g in geoms[j]:
            lines.append(f"{indent}  {g}")
        for c in _children(j):
            emit(c, indent + "  ")
        lines.append(f"{indent}</body>")

    emit(0, "    ")
    xml = f"""<mujoco model="dynaset_smpl_humanoid">
  <compiler angle="degree" inertiafromgeom="false" autolimits="true"/>
  <option timestep="{physics_dt_s:.9g}" gravity="0 0 {-GRAVITY_MPS2:.9g}" integrator="Euler"/>
  <default>
    <joint armature="{p.armature:.6g}" damping="{p.damping:.6g}" solreflimit="{_f(p.limit_solref)}"/>
    <geom contype="2" conaffinity="1" condim="3" friction="{p.friction:.6g} 0.005 0.0001"
          solref="{_f(p.solref)}" solimp="{_f(p.solimp)}" margin="{p.margin:.6g}" rgba="0.8 0.6 0.5 1"/>
  </default>
  <worldbody>
    <geom name="floor" type="plane" size="0 0 0.05" contype="1" conaffinity="2" rgba="0.3 0.3 0.3 1"/>
{chr(10).join(lines)}
  </worldbody>
  <sensor>
{chr(10).join(f'    <contact name="floor_{n}" geom1="floor" body2="{n}" data="found force torque pos" reduce="netforce" num="1"/>' for n in names)}
  </sensor>
</mujoco>
"""
    info = {"sole_local": sole_local, "sole_body": sole_body}
    return xml, info


def skeleton_key(skeleton: sk.Skeleton, mass_kg: float, gender: str, params: HumanoidParams, dt: float) -> str:
    """Cache key: hash of the rest joints, height, mass, gender, parameters and physics step."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(skeleton.rest_joints_m, dtype=np.float64).tobytes())
    h.update(repr((float(skeleton.height_m), float(mass_kg), gender, params, float(dt))).encode())
    return h.hexdigest()


_CACHE: OrderedDict[str, Humanoid] = OrderedDict()
_CACHE_SIZE = 64


def build_humanoid(
    skeleton: sk.Skeleton, mass_kg: float, gender: str = "neutral", params: HumanoidParams | None = None,
    physics_dt_s: float = 1.0 / 480.0,
) -> Humanoid:
    """Compiled humanoid for a subject (cached per skeleton hash, mass, gender, parameters, step)."""
    params = params or HumanoidParams()
    key = skeleton_key(skeleton, mass_kg, gender, params, physics_dt_s)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    xml, info = build_mjcf(skeleton, mass_kg, gender, params, physics_dt_s)
    model = mujoco.MjModel.from_xml_string(xml)
    body_ids = np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n) for n in sk.JOINT_NAMES])
    limits = np.array([TORQUE_LIMIT_NM_PER_KG[n] * mass_kg for n in sk.JOINT_NAMES[1:]])
    qidx = [0, 1, 2]
    didx = [0, 1, 2]
    for j, name in enumerate(sk.JOINT_NAMES):
        jid = 0 if j == 0 else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        qa, da = int(model.jnt_qposadr[jid]), int(model.jnt_dofadr[jid])
        if j == 0:
            qa, da = qa + 3, da + 3
        qidx += list(range(qa, qa + 4))
        didx += list(range(da, da + 3))
    hum = Humanoid(
        model=model, xml=xml, skeleton=skeleton, mass_kg=float(mass_kg), gender=gender, body_ids=body_ids,
        sole_points_local=info["sole_local"], sole_point_body=info["sole_body"], torque_limit_nm=limits,
        qpos_index=np.array(qidx), dof_index=np.array(didx),
    )
    _CACHE[key] = hum
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return hum


def skeleton_from_motion(motion) -> sk.Skeleton:
    """The rest skeleton a ``CanonicalMotion`` was built with.

    Anthropometric skeletons are rebuilt from the height (exact). Otherwise the template offsets
    are recovered from frame 0 by inverting forward kinematics,
    ``offset_j = R_parent(0)ᵀ (p_j(0) − p_parent(0))``, and J0 is taken from the anthropometric
    skeleton of the same height (it only fixes the template sole plane).
    """
    from pipeline import rotations as rot

    H = float(motion.height_m)
    base = sk.anthropometric_skeleton(H)
    if motion.skeleton_origin == "anthropometric":
        return base
    R = rot.aa_to_rotmat(np.asarray(motion.joint_rot_aa_rad[:1], float))
    glob, _ = sk.forward_kinematics(R, np.zeros((1, 3)), np.zeros((sk.N_JOINTS, 3)))
    pos = np.asarray(motion.joint_pos_m[0], float)
    off = np.zeros((sk.N_JOINTS, 3))
    off[0] = base.rest_joints_m[0]
    for j in range(1, sk.N_JOINTS):
        p = sk.PARENTS[j]
        off[j] = glob[0, p].T @ (pos[j] - pos[p])
    rest = np.zeros_like(off)
    rest[0] = off[0]
    for j in range(1, sk.N_JOINTS):
        rest[j] = rest[sk.PARENTS[j]] + off[j]
    return sk.Skeleton(rest_joints_m=rest, height_m=H, origin=motion.skeleton_origin)
