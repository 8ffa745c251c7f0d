"""Functional joint centres from marker clusters (SCoRE; pure numpy; docs/marker_sets.md).

A cluster marker set (BTK sample01/02: three or four technical markers per segment, no anatomical
landmark) says where each *segment* is, but not where its joints are. The joint centre between two
clusters is the point that is fixed in both of them (Ehrig et al. 2006, "A survey of formal methods for
determining the centre of rotation of ball joints", J Biomech 39: SCoRE):

    min over c_p, c_c of  Σ_t |R_p(t) c_p + t_p(t) − R_c(t) c_c − t_c(t)|²  +  λ T (|c_p − a_p|² + |c_c − a_c|²)

with (R, t)(t) each cluster's rigid pose (Kabsch onto its shape in a reference frame; ≥ 3 markers seen),
c the centre in the cluster frames, a the mean midpoint of the two clusters' centroids in those frames
and λ = ``REG`` a small Tikhonov term: a hinge (knee, elbow; the ankle in a straight walk) fixes its
centre only up to a slide along the hinge axis, and the term picks the point of the axis nearest to the
clusters. The centre per frame is the mean of the two clusters' predictions; ``mismatch_m`` the RMS of
their difference (how well the two segments share a point).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REG = 0.01
"""λ of the Tikhonov term (per frame, relative to the rotational terms, which scale with 1 − cos θ)."""
MIN_FRAMES = 10
MIN_RANGE_RAD = np.radians(15.0)
"""Least range of the relative rotation (98th percentile of its angle from the mean) for a centre to be used."""
MAX_CLUSTER_RMS_M = 0.005
"""A cluster frame fitting its shape worse than this (and than 3 × the median) is left out."""
MAX_MISMATCH_M = 0.03
"""Largest RMS distance between the two clusters' predictions of the centre for it to be used."""


@dataclass(frozen=True)
class JointCentre:
    """A functional joint centre: ``centre_m`` (T, 3) (NaN where a cluster is not seen), ``mismatch_m`` RMS
    of the two clusters' predictions, ``range_rad`` the relative rotation's range (98th percentile of its angle from the mean), ``frames`` used."""

    centre_m: np.ndarray
    mismatch_m: float
    range_rad: float
    frames: int


def cluster_poses(points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid pose per frame of a marker cluster (T, n, 3) (NaN = missing): (T, 3, 3) rotation and (T, 3)
    translation mapping the cluster's shape in its reference frame (of the frames with the most markers seen,
    the one whose marker distances are nearest their medians; centred on their centroid) onto the frame's markers (Kabsch on the ≥ 3 markers seen in both); NaN where
    fewer than 3 are seen. Markers not seen in the reference frame are ignored."""
    p = np.asarray(points_m, dtype=np.float64)
    t_n = p.shape[0]
    vis = np.isfinite(p).all(axis=-1)
    rot = np.full((t_n, 3, 3), np.nan)
    trans = np.full((t_n, 3), np.nan)
    if not t_n or vis.sum(axis=1).max() < 3:
        return rot, trans
    full = vis.sum(axis=1) == vis.sum(axis=1).max()
    keep = vis[np.flatnonzero(full)[0]]
    # reference: among the frames showing most markers, the one whose marker distances are the most typical
    # (a frame with a jumping marker would distort every pose)
    cand = np.flatnonzero(full & (vis == keep).all(axis=1))
    q = p[cand][:, keep]
    dist = np.linalg.norm(q[:, :, None] - q[:, None], axis=-1)
    ref_f = int(cand[np.argmin(np.abs(dist - np.median(dist, axis=0)).max(axis=(1, 2)))])
    ref = p[ref_f, keep] - p[ref_f, keep].mean(axis=0)
    pk, vk = p[:, keep], vis[:, keep]
    err = np.full(t_n, np.nan)
    for f in np.flatnonzero(vk.sum(axis=1) >= 3):
        s = vk[f]
        a, b = ref[s], pk[f, s]
        ca, cb = a.mean(axis=0), b.mean(axis=0)
        u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
        d = np.sign(np.linalg.det(vt.T @ u.T))
        r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
        rot[f] = r
        trans[f] = cb - r @ ca
        err[f] = np.sqrt(np.mean(np.sum((a @ r.T + trans[f] - b) ** 2, axis=1)))
    if np.isfinite(err).any():  # a swapped or jumping marker: the cluster is not rigid in that frame
        bad = err > max(3.0 * float(np.nanmedian(err)), MAX_CLUSTER_RMS_M)
        rot[bad], trans[bad] = np.nan, np.nan
    return rot, trans


def score_centre(parent_m: np.ndarray, child_m: np.ndarray, reg: float = REG) -> JointCentre | None:
    """The SCoRE centre (module docstring) between two marker clusters (T, n_p, 3) and (T, n_c, 3), metres;
    ``None`` with fewer than ``MIN_FRAMES`` frames where both are seen."""
    rp, tp = cluster_poses(parent_m)
    rc, tc = cluster_poses(child_m)
    ok = np.isfinite(rp).all(axis=(1, 2)) & np.isfinite(rc).all(axis=(1, 2))
    n = int(ok.sum())
    if n < MIN_FRAMES:
        return None
    rp_, tp_, rc_, tc_ = rp[ok], tp[ok], rc[ok], tc[ok]
    mid = 0.5 * (tp_ + tc_)
    a_p = np.einsum("tji,tj->i", rp_, mid - tp_) / n  # mean of R_pᵀ (mid − t_p)
    a_c = np.einsum("tji,tj->i", rc_, mid - tc_) / n
    a = np.concatenate([rp_, -rc_], axis=2)  # (n, 3, 6)
    rhs = tc_ - tp_  # (n, 3)
    lhs = np.einsum("tki,tkj->ij", a, a) + reg * n * np.eye(6)
    b = np.einsum("tki,tk->i", a, rhs) + reg * n * np.concatenate([a_p, a_c])
    c = np.linalg.solve(lhs, b)
    x = np.einsum("tij,j->ti", rp_, c[:3]) + tp_
    y = np.einsum("tij,j->ti", rc_, c[3:]) + tc_
    centre = np.full((len(ok), 3), np.nan)
    centre[ok] = 0.5 * (x + y)
    rel = np.einsum("tji,tjk->tik", rp_, rc_)  # child relative to parent
    mean_rel = np.mean(rel, axis=0)
    u, _, vt = np.linalg.svd(mean_rel)
    mean_rel = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    cos = (np.einsum("ij,tij->t", mean_rel, rel) - 1.0) / 2.0
    rng = float(np.percentile(np.arccos(np.clip(cos, -1.0, 1.0)), 98))
    return JointCentre(centre_m=centre, mismatch_m=float(np.sqrt(np.mean(np.sum((x - y) ** 2, axis=1)))),
                       range_rad=rng, frames=n)


def usable(c: JointCentre | None) -> bool:
    """A centre estimated from enough motion whose two clusters agree (``MIN_RANGE_RAD``, ``MAX_MISMATCH_M``)."""
    return c is not None and c.range_rad >= MIN_RANGE_RAD and c.mismatch_m <= MAX_MISMATCH_M
