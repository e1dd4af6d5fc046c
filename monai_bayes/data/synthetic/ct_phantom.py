"""A simple, plausible chest CT phantom in Hounsfield units, with lung nodules.

Everything is built on a physical (mm) grid with soft (partial-volume) edges:

==========================  =================  ========================================
structure                   HU                 notes
==========================  =================  ========================================
air outside the body        -1000
subcutaneous fat            -100 ± 10          ring 10–20 mm thick
muscle / mediastinum        +40 ± 10
lungs                       -860 ± 25          smooth parenchyma texture
vessels                     +40                3D tapering tubes from the hila
ribs / sternum / spine      +250 … +800        cortical rims, ribs appear intermittently
solid nodules               0 … +60            radius 2–15 mm, lobulated, sharp edge
ground-glass nodules        -650 … -400        fuzzier edge
cavities                    -900               in some large solid nodules
calcified granulomas        +500               the "nonNodule" marks
noise                       σ ≈ 15             spatially correlated
==========================  =================  ========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["ChestGeometry", "NoduleSpec", "lung_membership", "make_chest_ct", "nodule_membership", "sample_nodules"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, edge_mm: float) -> np.ndarray:
    """Soft membership of an axis-aligned ellipse (semi-axes ``a``, ``b`` mm, edge width ``edge_mm``)."""
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    return _sigmoid((1.0 - r) * min(a, b) / edge_mm)


def _mix(hu: np.ndarray, value: float | np.ndarray, m: np.ndarray) -> np.ndarray:
    return hu * (1.0 - m) + value * m


@dataclass
class ChestGeometry:
    """Per-case anatomy parameters (mm, LPS-ish: x to the patient's left, y posterior)."""

    body_a: float
    body_b: float
    fat: float
    lung_a: float
    lung_b: float
    lung_dx: float
    heart_r: float
    rib_phase: np.ndarray
    rib_period: float
    scale: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator, fov_mm: float = 340.0) -> ChestGeometry:
        """Draw an adult-sized chest, shrunk uniformly (``scale`` < 1) when it would not fit in a
        field of view of ``fov_mm`` (small test volumes).
        """
        sc = min(1.0, 0.45 * fov_mm / 155.0)
        body_a = rng.uniform(135, 155) * sc
        body_b = rng.uniform(95, 112) * sc
        return cls(
            scale=sc,
            body_a=body_a,
            body_b=body_b,
            fat=rng.uniform(10, 20) * sc,
            lung_a=body_a * rng.uniform(0.30, 0.34),
            lung_b=body_b * rng.uniform(0.66, 0.72),
            lung_dx=body_a * rng.uniform(0.42, 0.46),
            heart_r=rng.uniform(38, 48) * sc,
            rib_phase=rng.uniform(0, 2 * np.pi, 12),
            rib_period=rng.uniform(35, 50),
        )

    def lung_scale(self, t: float) -> float:
        """Lung size factor at relative slab height ``t`` in [0, 1]."""
        return 0.85 + 0.15 * np.sin(np.pi * (0.25 + 0.6 * t))

    def lung_params(self, t: float) -> list[tuple[float, float, float, float]]:
        """``(cx, cy, a, b)`` of the right and left lung ellipses at height ``t``."""
        s = self.lung_scale(t)
        return [(sgn * self.lung_dx, -4.0, self.lung_a * s, self.lung_b * s) for sgn in (-1.0, 1.0)]


@dataclass
class NoduleSpec:
    """One nodule of the phantom (what the simulated readers outline).

    Attributes
    ----------
    centre
        ``(x, y, z)`` mm in patient coordinates.
    radius
        Mean radius ``R`` in mm.
    z_scale
        Elongation along z (the z semi-axis is ``R * z_scale``).
    harmonics
        ``(K, 3)`` rows ``(k, amplitude, phase)`` of the lobulated in-plane radius
        ``ρ(θ) = R_z (1 + Σ a_k cos(kθ + φ_k))``.
    hu
        Attenuation of the nodule.
    kind
        ``"solid"`` or ``"ground_glass"``.
    edge_mm
        Width of the soft edge.
    cavity_radius
        Radius (mm) of a central air cavity (0: none).
    """

    centre: np.ndarray
    radius: float
    z_scale: float
    harmonics: np.ndarray
    hu: float
    kind: str
    edge_mm: float
    cavity_radius: float = 0.0
    extra: dict = field(default_factory=dict)

    def radius_at(self, z: float) -> float:
        """In-plane mean radius ``R_z`` (mm) of the cross-section at patient z."""
        u = (z - self.centre[2]) / (self.radius * self.z_scale)
        return float(self.radius * np.sqrt(max(0.0, 1.0 - u * u)))

    def cavity(self) -> NoduleSpec:
        """The central air cavity as a (spherical) nodule-like spec."""
        return NoduleSpec(self.centre, self.cavity_radius, 0.8, np.zeros((0, 3)), -900.0, "cavity", 0.4)

    def rho(self, theta: np.ndarray, r_z: float) -> np.ndarray:
        """Lobulated boundary radius (mm) at angles ``theta`` for cross-section radius ``r_z``."""
        shape = np.ones_like(theta)
        for k, a, p in self.harmonics:
            shape = shape + a * np.cos(k * theta + p)
        return r_z * shape


def nodule_membership(spec: NoduleSpec, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
    """Soft membership in [0, 1] of the nodule on the plane at patient ``z`` (grids ``x``, ``y`` in mm)."""
    r_z = spec.radius_at(z)
    if r_z <= 0:
        return np.zeros_like(x)
    dxm, dym = x - spec.centre[0], y - spec.centre[1]
    d = np.hypot(dxm, dym)
    return _sigmoid((spec.rho(np.arctan2(dym, dxm), r_z) - d) / spec.edge_mm)


def sample_nodules(
    rng: np.random.Generator,
    geom: ChestGeometry,
    z_range: tuple[float, float],
    num: int,
    radius_range: tuple[float, float] = (2.0, 15.0),
    ground_glass_fraction: float = 0.3,
) -> list[NoduleSpec]:
    """Draw ``num`` non-overlapping nodules inside the lungs of the slab ``z_range`` (mm)."""
    out: list[NoduleSpec] = []
    zlo, zhi = z_range
    for _ in range(num * 30):
        if len(out) == num:
            break
        radius = float(np.exp(rng.uniform(np.log(radius_range[0]), np.log(radius_range[1]))))
        z_scale = float(rng.uniform(0.8, 1.2))
        ext = radius * z_scale + 2.0
        if zhi - zlo <= 2 * ext:
            continue
        cz = rng.uniform(zlo + ext, zhi - ext)
        t = (cz - zlo) / (zhi - zlo)
        cx, cy, a, b = geom.lung_params(t)[rng.integers(2)]
        ang, rr = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1))
        scale = 1.0 - (radius * 1.3 + 4.0) / min(a, b)
        if scale <= 0.05:
            continue
        c = np.array([cx + rr * scale * a * np.cos(ang), cy + rr * scale * b * np.sin(ang), cz])
        if any(np.linalg.norm(c - o.centre) < radius + o.radius + 8.0 for o in out):
            continue
        ggo = rng.random() < ground_glass_fraction
        lob = 0.03 + 0.05 * min(radius / 15.0, 1.0)
        ks = np.arange(2, 6)
        harm = np.stack([ks, rng.normal(0, lob, 4) / np.sqrt(ks - 1), rng.uniform(0, 2 * np.pi, 4)], axis=1)
        cavity = radius * rng.uniform(0.3, 0.4) if (not ggo and radius >= 8.0 and rng.random() < 0.25) else 0.0
        out.append(
            NoduleSpec(
                centre=c,
                radius=radius,
                z_scale=z_scale,
                harmonics=harm,
                hu=float(rng.uniform(-650, -400) if ggo else rng.uniform(0, 60)),
                kind="ground_glass" if ggo else "solid",
                edge_mm=float(rng.uniform(0.6, 1.0) if ggo else rng.uniform(0.25, 0.4)),
                cavity_radius=float(cavity),
            )
        )
    return out


def _add_tube(
    hu: np.ndarray,
    lung: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    p0: np.ndarray,
    p1: np.ndarray,
    r0: float,
    r1: float,
    value: float,
) -> None:
    """Blend a tapering cylinder from ``p0`` to ``p1`` (mm) into ``hu`` where ``lung`` is set."""
    zs, ys, xs = grid
    lo, hi = np.minimum(p0, p1) - max(r0, r1) - 2, np.maximum(p0, p1) + max(r0, r1) + 2
    iz = np.flatnonzero((zs >= lo[2]) & (zs <= hi[2]))
    iy = np.flatnonzero((ys >= lo[1]) & (ys <= hi[1]))
    ix = np.flatnonzero((xs >= lo[0]) & (xs <= hi[0]))
    if len(iz) == 0 or len(iy) == 0 or len(ix) == 0:
        return
    Z, Y, X = np.meshgrid(zs[iz], ys[iy], xs[ix], indexing="ij")
    P = np.stack([X, Y, Z], axis=-1)
    d = p1 - p0
    t = np.clip(((P - p0) @ d) / max(d @ d, 1e-9), 0, 1)
    dist = np.linalg.norm(P - (p0 + t[..., None] * d), axis=-1)
    r = r0 + (r1 - r0) * t
    m = _sigmoid((r - dist) / 0.4) * lung[np.ix_(iz, iy, ix)]
    sub = hu[np.ix_(iz, iy, ix)]
    hu[np.ix_(iz, iy, ix)] = np.maximum(sub, _mix(sub, value, m))


def make_chest_ct(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: np.ndarray,
    geom: ChestGeometry,
    nodules: Sequence[NoduleSpec],
    calcified: Sequence[NoduleSpec] = (),
    noise_hu: float = 15.0,
    num_vessels: int = 24,
    t_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the phantom.

    Parameters
    ----------
    rng
        Random generator (vessels, textures, noise).
    shape
        ``(Z, Y, X)`` voxels.
    spacing
        ``(dz, dy, dx)`` mm.
    origin
        ``(x, y, z)`` mm of voxel ``(0, 0, 0)``.
    geom
        Anatomy parameters.
    nodules, calcified
        Nodules (outlined by the readers) and calcified granulomas (non-nodules).
    noise_hu
        Standard deviation of the correlated noise.
    num_vessels
        Vessel tubes per lung.
    t_range
        Relative heights in the chest (0 = lung base, 1 = apex) of the first and last slice; a
        window cut from a longer scan passes its own part so the lungs keep their size.

    Returns
    -------
    (hu, lung, truth)
        ``(Z, Y, X)`` float32 HU; float32 lung membership; uint8 nodule index + 1 where the
        nodule membership is >= 0.5 (0 elsewhere), the phantom's own truth.
    """
    nz, ny, nx = shape
    dz, dy, dx = spacing
    xs = origin[0] + np.arange(nx) * dx
    ys = origin[1] + np.arange(ny) * dy
    zs = origin[2] + np.arange(nz) * dz
    X, Y = (g.astype(np.float32) for g in np.meshgrid(xs, ys))
    texture = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=(1.0, 3.0, 3.0), truncate=3.0)
    texture *= 25.0 / max(texture.std(), 1e-6)
    hu, lung = _render_anatomy(geom, X, Y, zs, texture, t_range)
    _add_vessels(rng, hu, lung, geom, (zs, ys, xs), num_vessels)
    truth = _add_nodules(hu, X, Y, xs, ys, zs, dz, nodules, calcified)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=(0.3, 0.7, 0.7), truncate=3.0)
    hu += noise * (noise_hu / max(noise.std(), 1e-6))
    return hu.astype(np.float32), lung, truth


def lung_membership(g: ChestGeometry, X: np.ndarray, Y: np.ndarray, t: float) -> np.ndarray:
    """Soft lung membership in [0, 1] on the plane at relative height ``t`` (grids ``X``, ``Y`` in mm):
    the two lung ellipses minus the mediastinum (heart and spine band).
    """
    sc = g.scale
    m_lung = np.zeros_like(X)
    for cx, cy, a, b in g.lung_params(t):
        m_lung = np.maximum(m_lung, _ellipse(X, Y, cx, cy, a, b, 1.2))
    heart_r = g.heart_r * (0.6 + 0.4 * (1 - t))
    heart = _ellipse(X, Y, 12 * sc, -18 * sc, heart_r, heart_r * 0.85, 1.0)
    spine_band = _ellipse(X, Y, 0, 0, 25 * sc, g.body_b * 0.8, 1.0)
    return m_lung * (1 - np.maximum(heart, spine_band))


def _render_anatomy(
    g: ChestGeometry,
    X: np.ndarray,
    Y: np.ndarray,
    zs: np.ndarray,
    texture: np.ndarray,
    t_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Body, fat, muscle, ribs, lungs, mediastinum, aortas, spine, sternum; returns (HU, lung membership)."""
    nz, (ny, nx) = len(zs), X.shape
    hu = np.full((nz, ny, nx), -1000.0, dtype=np.float32)
    lung = np.zeros((nz, ny, nx), dtype=np.float32)
    ab, bb, sc = g.body_a, g.body_b, g.scale

    def ell(cx: float, cy: float, a: float, b: float, edge: float) -> np.ndarray:  # anatomy in scaled mm
        return _ellipse(X, Y, cx * sc, cy * sc, a * sc, b * sc, edge)

    body = _mix(
        _mix(np.full((ny, nx), -1000.0, dtype=np.float32), -100.0, _ellipse(X, Y, 0, 0, ab, bb, 1.0)),
        40.0,
        _ellipse(X, Y, 0, 0, ab - g.fat, bb - g.fat, 1.0),
    )
    overlays = [  # (HU, membership): aortas, vertebral body with cortex, spinal canal
        (45.0, ell(-18, -30, 13, 13, 0.8)),
        (45.0, ell(22, bb / sc - 62, 11, 11, 0.8)),
        (750.0, ell(0, bb / sc - 38, 17, 16, 0.6)),
        (250.0, ell(0, bb / sc - 38, 14.5, 13.5, 0.6)),
        (15.0, ell(0, bb / sc - 16, 7, 7, 0.6)),
    ]
    sternum = ell(0, -bb / sc + 16, 12, 5, 0.6)
    ribs = []
    for i in range(len(g.rib_phase)):
        ang = np.pi * (0.15 + 0.7 * (i % 6) / 5) * (1 if i < 6 else -1)
        rx, ry = np.cos(ang) * (ab - g.fat - 7 * sc), np.sin(ang) * (bb - g.fat - 7 * sc)
        ribs.append((ell(rx / sc, ry / sc, 7, 4.5, 0.6), ell(rx / sc, ry / sc, 5, 2.8, 0.6)))
    for k, z in enumerate(zs):
        t = t_range[0] + (t_range[1] - t_range[0]) * k / max(nz - 1, 1)
        h = body.copy()
        # ribs: intermittent along z, on an ellipse inside the fat layer
        for (outer, inner), ph in zip(ribs, g.rib_phase):
            if np.cos(2 * np.pi * z / g.rib_period + ph) >= 0.3:
                h = _mix(_mix(h, 650.0, outer), 250.0, inner)
        m_lung = lung_membership(g, X, Y, t)
        h = _mix(h, -860.0 + texture[k], m_lung)
        for value, m in overlays:
            h = _mix(h, value, m)
        if np.cos(2 * np.pi * z / 60.0) > -0.2:
            h = _mix(h, 450.0, sternum)
        hu[k] = h
        lung[k] = m_lung
    return hu, lung


def _add_vessels(
    rng: np.random.Generator,
    hu: np.ndarray,
    lung: np.ndarray,
    g: ChestGeometry,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_vessels: int,
) -> None:
    """Branch-like chains of tapering tubes from each hilum into the lung (in place)."""
    zs, sc = grid[0], g.scale
    for cx, _, _, _ in g.lung_params(0.5):
        for _ in range(num_vessels):
            p = np.array([cx * 0.45, rng.uniform(-25, 15) * sc, rng.uniform(zs[0], zs[-1])])
            r = rng.uniform(2.0, 3.5) * max(sc, 0.5)
            direction = np.array([np.sign(cx) * rng.uniform(0.3, 1), rng.uniform(-1, 1), rng.uniform(-0.6, 0.6)])
            for _ in range(rng.integers(3, 7)):
                direction = direction / np.linalg.norm(direction) + rng.normal(0, 0.35, 3)
                direction /= np.linalg.norm(direction)
                q = p + direction * rng.uniform(12, 25) * sc
                r_next = max(0.6, r * rng.uniform(0.6, 0.9))
                _add_tube(hu, lung, grid, p, q, r, r_next, 40.0)
                p, r = q, r_next


def _add_nodules(
    hu: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    dz: float,
    nodules: Sequence[NoduleSpec],
    calcified: Sequence[NoduleSpec],
) -> np.ndarray:
    """Blend nodules (with partial volume along z and cavities) into ``hu`` in place; returns the
    ``(Z, Y, X)`` uint8 truth (nodule index + 1 where the membership is >= 0.5, cavities excluded).
    """
    truth = np.zeros(hu.shape, dtype=np.uint8)
    for i, spec in enumerate(list(nodules) + list(calcified)):
        half = spec.radius * spec.z_scale + dz
        reach = spec.radius * (1 + np.abs(spec.harmonics[:, 1]).sum()) + 8 * spec.edge_mm + 2
        cols = np.flatnonzero(np.abs(xs - spec.centre[0]) <= reach)
        rows = np.flatnonzero(np.abs(ys - spec.centre[1]) <= reach)
        if len(cols) == 0 or len(rows) == 0:
            continue
        win = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        Xw, Yw = X[win], Y[win]
        for k in np.flatnonzero(np.abs(zs - spec.centre[2]) <= half):
            # partial volume along z: average over three sub-planes of the slice
            m = np.mean([nodule_membership(spec, Xw, Yw, zs[k] + s * dz / 3) for s in (-1, 0, 1)], axis=0)
            hk = _mix(hu[k][win], spec.hu, m)
            solid = nodule_membership(spec, Xw, Yw, zs[k]) >= 0.5
            if spec.cavity_radius > 0:
                c = nodule_membership(spec.cavity(), Xw, Yw, zs[k])
                hk = _mix(hk, -900.0, c)
                solid &= c < 0.5
            hu[k][win] = hk
            if i < len(nodules):
                truth[k][win][solid] = i + 1
    return truth
