"""Synthetic atom-resolved STEM-EELS spectrum images with a per-atom ground truth.

Everything spectral comes from database records (real backend output): each carbon of a real
molecule gets the site spectrum and the ground-state site DOS of its symmetry class
(``SiteTable.sites["equivalent"]``). Molecules are projected onto their best plane (PCA of the
coordinates), rotated at random in that plane and laid out on a jittered grid, N/O/F/H atoms
included. Then:

- ADF image: Gaussian probe, contrast ``Z**1.7``, Poisson counts plus Gaussian read noise;
- spectrum image: every pixel's mean counts are ``dose * sum_atoms w_atom(pixel) *
  site_spectrum_atom(E)`` (``w`` the probe's weight, which sums to 1 over the pixels, and the site
  spectrum area-normalised on the energy axis: ``dose`` is the carbon K-edge counts of one carbon
  atom) plus a power-law background, then Poisson counts; an optional instrument resolution.
"""

from __future__ import annotations

import json
import time

import numpy as np
from scipy import ndimage

from napari_corefit.backend.curves import CONTINUUM, Continuum, absolute_site_spectra, site_dos
from napari_corefit.spectra.grids import BROADENING_EV, DOS_GRID, EnergyGrid

__all__ = ["ATOMIC_NUMBER", "SampleSettings", "carbon_site_rows", "project_to_plane",
           "arrange_molecules", "simulate", "make_sample"]

ATOMIC_NUMBER = {"H": 1, "B": 5, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17}

#: default energy-loss axis: the pre-edge window (250-280 eV) the background fit needs, the edge
SI_AXIS = EnergyGrid(250.0, 0.2, 400)


class SampleSettings:
    """Knobs of a synthetic sample (plain attributes; ``to_dict`` goes into the file).

    Parameters
    ----------
    size : int
        Scan size, pixels (square scan).
    pixel_nm : float
        Pixel size, nm.
    spacing_nm : float
        Distance between molecule centres on the layout grid, nm.
    probe_fwhm_nm : float
        Probe FWHM (nm), used for the ADF image and the EELS signal alike.
    dose : float
        Carbon K-edge counts of one carbon atom over the whole energy axis (summed over all
        pixels its probe tail reaches).
    signal_to_background : float
        Edge over background counts in 284-300 eV within 0.07 nm of a carbon atom.
    background_exponent : float
        ``r`` of the ``E**-r`` background.
    resolution_fwhm : float or None
        Instrument resolution (Gaussian FWHM, eV); sticks are then broadened by the rest of the
        model's width, so that the total stays the model's 0.5 eV (None: sticks broadened by
        0.5 eV directly).
    adf_counts : float
        Mean ADF counts at the centre of an isolated carbon atom.
    adf_read_noise : float
        Gaussian read noise of the ADF image, counts.
    energy : EnergyGrid
        Energy-loss axis, eV.
    rotation_deg : float
        Each molecule's long axis lies along x, turned by a random angle up to this many
        degrees (and flipped at random). Nearly aligned molecules, as in a molecular layer, give
        the image's autocorrelation a clear peak at the bond length, from which the atom finder
        estimates the column separation by default; 180 gives random orientations.
    continuum : Continuum or None
        How sticks become spectra (:mod:`napari_corefit.backend.curves`): the realistic recipe
        by default (ionisation step and continuum widths), None for the discrete lines.
    """

    def __init__(self, size=112, pixel_nm=0.02, spacing_nm=0.55, probe_fwhm_nm=0.06,
                 dose=2.0e4, signal_to_background=1.0, background_exponent=3.0,
                 resolution_fwhm=None, adf_counts=200.0, adf_read_noise=3.0, energy=SI_AXIS,
                 rotation_deg=10.0, continuum=CONTINUUM):
        self.size = int(size)
        self.pixel_nm = float(pixel_nm)
        self.spacing_nm = float(spacing_nm)
        self.probe_fwhm_nm = float(probe_fwhm_nm)
        self.dose = float(dose)
        self.signal_to_background = float(signal_to_background)
        self.background_exponent = float(background_exponent)
        self.resolution_fwhm = None if resolution_fwhm is None else float(resolution_fwhm)
        self.adf_counts = float(adf_counts)
        self.adf_read_noise = float(adf_read_noise)
        self.energy = energy if isinstance(energy, EnergyGrid) else EnergyGrid(*energy)
        self.rotation_deg = float(rotation_deg)
        self.continuum = continuum if continuum is None or isinstance(continuum, Continuum) \
            else Continuum(**continuum)
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.dose <= 0 or self.signal_to_background <= 0:
            raise ValueError("dose and signal_to_background must be > 0")
        sig = _fwhm_to_sigma(self.resolution_fwhm or 0.0)
        if sig >= BROADENING_EV:
            raise ValueError(f"resolution_fwhm {self.resolution_fwhm} eV is wider than the "
                             f"model's broadening ({BROADENING_EV} eV standard deviation)")

    def to_dict(self):
        d = {k: v for k, v in vars(self).items() if k not in ("energy", "continuum")}
        d["energy"] = self.energy.to_dict()
        d["continuum"] = None if self.continuum is None else self.continuum.as_dict()
        return d


def _fwhm_to_sigma(fwhm):
    return float(fwhm) / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def carbon_site_rows(table):
    """Map ``(molecule, atom_index) -> site row`` for every carbon with a usable site record.

    A site record stands for its whole symmetry class (``sites["equivalent"]``), so equivalent
    carbons share the row of the one computed site.
    """
    rows = {}
    ok = np.asarray(table.sites["ok"], bool)
    for r, (m, eq) in enumerate(zip(table.sites["molecule"], table.sites["equivalent"])):
        if ok[r]:
            for a in np.atleast_1d(eq):
                rows[(int(m), int(a))] = r
    return rows


def usable_molecules(table, min_projected_nm=0.1):
    """Molecules whose every carbon has a usable site record (and that have a carbon).

    Molecules whose projection puts two heavy atoms closer than ``min_projected_nm`` are left
    out: such atoms stand on top of each other in the image (a puckered ring seen edge-on), and
    no atom-resolved measurement tells them apart.
    """
    rows = carbon_site_rows(table)
    out = []
    for m in range(table.n_molecules):
        symbols, coords = table.molecule_atoms(m)
        symbols = np.array([str(s) for s in symbols])
        carbons = np.flatnonzero(symbols == "C")
        if not carbons.size or not all((m, int(i)) in rows for i in carbons):
            continue
        heavy = project_to_plane(coords)[symbols != "H"] / 10.0
        d = np.linalg.norm(heavy[:, None] - heavy[None], axis=-1)
        if heavy.shape[0] > 1 and d[np.triu_indices(len(heavy), 1)].min() < min_projected_nm:
            continue
        out.append(m)
    return np.array(out, dtype=np.int64)


def project_to_plane(coords):
    """2-D projection of a molecule onto its best plane (first two principal axes), Angstrom.

    The first column is along the molecule's longest axis.

    Examples
    --------
    >>> xyz = np.array([[0, 0, 0], [1.5, 0, 0], [0, 0, 1.0]])
    >>> p = project_to_plane(xyz)
    >>> round(float(np.linalg.norm(p[1] - p[0])), 3)
    1.5
    """
    xyz = np.asarray(coords, dtype=np.float64)
    centred = xyz - xyz.mean(axis=0)
    if len(xyz) < 2:
        return centred[:, :2]
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt, [0, 0, 0]])
    return centred @ axes.T


def _placed(xy, cy, cx, size_nm, edge_nm):
    y, x = cy + xy[:, 1], cx + xy[:, 0]
    inside = (y.min() >= edge_nm and x.min() >= edge_nm and y.max() <= size_nm - edge_nm
              and x.max() <= size_nm - edge_nm)
    return y, x, inside


def arrange_molecules(table, settings, rng, molecules=None, gap_nm=0.3, edge_nm=0.12,
                      tries=400):
    """Place molecules at random, without overlap, on the scan.

    Molecules are taken in turn from ``molecules`` (default: every usable one, shuffled) and
    repeated with new positions and rotations until about ``(field / spacing)**2`` are placed
    or no more fit. Positions are random rather than on a lattice: a lattice of molecules would
    give the image's autocorrelation its strongest peak at the lattice spacing, and the atom
    finder would take that for the distance between atom columns.

    Parameters
    ----------
    gap_nm : float
        Least distance between heavy atoms of different molecules (H: half of it).
    edge_nm : float
        Least distance of any atom from the scan's edge.

    Returns
    -------
    dict of arrays, one row per atom (H included): ``y_nm``, ``x_nm``, ``y_px``, ``x_px``,
    ``symbol``, ``z``, ``molecule``, ``atom_index``, ``site`` (row of ``table.sites``, -1 for
    non-carbons), ``copy`` (which placement).
    """
    from scipy.spatial import cKDTree

    rows = carbon_site_rows(table)
    pool = usable_molecules(table) if molecules is None else np.asarray(molecules, np.int64)
    if pool.size == 0:
        raise ValueError("the database has no molecule whose carbons all have site records")
    pool = rng.permutation(pool)
    fov = (settings.size - 1) * settings.pixel_nm
    target = max(1, int(fov // settings.spacing_nm) ** 2)
    cols = {k: [] for k in ("y_nm", "x_nm", "symbol", "molecule", "atom_index", "site", "copy")}
    heavy_pts = np.zeros((0, 2))
    k = 0
    for attempt in range(target * tries):
        if k == target:
            break
        m = int(pool[k % pool.size])
        symbols, coords = table.molecule_atoms(m)
        symbols = np.array([str(s) for s in symbols])
        xy = project_to_plane(coords) / 10.0  # Angstrom -> nm
        a = np.deg2rad(rng.uniform(-settings.rotation_deg, settings.rotation_deg)
                       + 180.0 * rng.integers(2))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        xy = xy @ rot.T
        y, x, inside = _placed(xy, *rng.uniform(0, fov, 2), fov, edge_nm)
        if not inside:
            continue
        heavy = symbols != "H"
        if len(heavy_pts):
            tree = cKDTree(heavy_pts)
            d_heavy, _ = tree.query(np.c_[y, x][heavy])
            d_h, _ = tree.query(np.c_[y, x][~heavy]) if (~heavy).any() else (np.inf, None)
            if np.min(d_heavy) < gap_nm or np.min(d_h, initial=np.inf) < gap_nm / 2:
                continue
        heavy_pts = np.vstack([heavy_pts, np.c_[y, x][heavy]])
        for i, s in enumerate(symbols):
            cols["y_nm"].append(y[i])
            cols["x_nm"].append(x[i])
            cols["symbol"].append(s)
            cols["molecule"].append(m)
            cols["atom_index"].append(i)
            cols["site"].append(rows.get((m, i), -1) if s == "C" else -1)
            cols["copy"].append(k)
        k += 1
    if k == 0:
        raise ValueError(f"no molecule fits a {settings.size}-pixel scan of "
                         f"{settings.pixel_nm} nm pixels")
    out = {k: np.asarray(v) for k, v in cols.items()}
    unknown = sorted(set(out["symbol"]) - set(ATOMIC_NUMBER))
    if unknown:
        raise ValueError(f"no atomic number for elements {unknown}")
    out["z"] = np.array([ATOMIC_NUMBER[s] for s in out["symbol"]], np.int64)
    # nm as on the signal's axes (offset 0: the first pixel's centre at 0 nm, as the atom
    # finder counts pixels)
    out["y_px"] = out["y_nm"] / settings.pixel_nm
    out["x_px"] = out["x_nm"] / settings.pixel_nm
    return out


def _probe_weights(atoms, settings):
    """(n_pixels, n_atoms) probe weights, each column summing to ~1 over the (infinite) plane."""
    n = settings.size
    sigma_px = _fwhm_to_sigma(settings.probe_fwhm_nm) / settings.pixel_nm
    yy, xx = np.mgrid[:n, :n]
    dy = yy.reshape(-1, 1) - atoms["y_px"][None, :]
    dx = xx.reshape(-1, 1) - atoms["x_px"][None, :]
    g = np.exp(-(dy * dy + dx * dx) / (2 * sigma_px ** 2))
    return g, g / (2 * np.pi * sigma_px ** 2)


def site_spectra_on_axis(table, sites, settings):
    """Each site's spectrum on the SI axis, area-normalised (sum * step == 1)."""
    e = settings.energy
    sig_r = _fwhm_to_sigma(settings.resolution_fwhm or 0.0)
    sub = table.select(np.isin(np.arange(table.n_sites), sites))
    order = np.searchsorted(np.flatnonzero(np.isin(np.arange(table.n_sites), sites)), sites)
    # sticks broadened by what the instrument leaves of the model's width, then the instrument
    spec = absolute_site_spectra(sub, e.values, np.sqrt(BROADENING_EV ** 2 - sig_r ** 2),
                                 continuum=settings.continuum)
    if sig_r > 0:
        spec = ndimage.gaussian_filter1d(spec, sig_r / e.step, axis=-1, mode="nearest")
    spec = spec[order]
    area = spec.sum(axis=-1, keepdims=True) * e.step
    return spec / np.where(area > 0, area, 1.0)


def site_dos_rows(table, sites):
    """Ground-state site DOS (occupied, unoccupied) on DOS_GRID of the given site rows."""
    sub = table.select(np.isin(np.arange(table.n_sites), sites))
    order = np.searchsorted(np.flatnonzero(np.isin(np.arange(table.n_sites), sites)), sites)
    return site_dos(sub, DOS_GRID)[order]


def simulate(table, atoms, settings, rng):
    """ADF image and spectrum-image counts of an atom layout.

    Returns
    -------
    adf : ndarray (size, size) float32
    counts : ndarray (size, size, n_channels) uint16 (Poisson)
    truth : dict
        ``carbon`` (atom rows that are carbons), ``spectra`` (n_carbon, n_channels, the
        normalised site spectra), ``dos`` (n_carbon, 2, 300 on DOS_GRID), ``mean_counts``
        (expected edge counts of each carbon), background parameters.
    """
    n, e = settings.size, settings.energy
    g, w = _probe_weights(atoms, settings)
    zc = ATOMIC_NUMBER["C"] ** 1.7
    adf_mean = settings.adf_counts * (g @ (atoms["z"] ** 1.7 / zc))
    adf = rng.poisson(adf_mean) + rng.normal(0, settings.adf_read_noise, adf_mean.shape)
    adf = adf.reshape(n, n).astype(np.float32)

    carbon = np.flatnonzero(atoms["site"] >= 0)
    sites = atoms["site"][carbon]
    uniq, inv = np.unique(sites, return_inverse=True)
    spec_u = site_spectra_on_axis(table, uniq, settings)
    spectra = spec_u[inv]
    edge = settings.dose * (w[:, carbon] @ spectra) * e.step  # counts per channel

    # uniform background (support, valence tails): set by S/B near one carbon atom
    ev = e.values
    near = (ev >= 284.0) & (ev < 300.0)
    edge_near = settings.dose * float(spectra[:, near].sum(1).mean() * e.step) if carbon.size \
        else settings.dose
    disk_px = np.pi * 0.07 ** 2 / settings.pixel_nm ** 2
    shape = (ev / 285.0) ** -settings.background_exponent
    bg_pixel = edge_near / settings.signal_to_background / disk_px
    bg = bg_pixel * shape / shape[near].sum()
    mean = edge + bg[None, :]
    counts = rng.poisson(mean).astype(np.uint16 if mean.max() < 6e4 else np.uint32)
    truth = {"carbon": carbon, "spectra": spectra.astype(np.float32),
             "dos": site_dos_rows(table, uniq)[inv].astype(np.float32),
             "background_counts_per_pixel_284_300": float(bg[near].sum())}
    return adf, counts.reshape(n, n, e.n), truth


def _database_info(table, db_path):
    fp = ""
    try:
        fp = table.fingerprint()
    except OSError:
        pass
    return {"path": str(db_path), "n_molecules": int(table.n_molecules),
            "n_sites": int(table.n_sites), "n_shards": len(table.shards), "fingerprint": fp}


def make_sample(table, settings=None, seed=0, molecules=None, db_path=""):
    """A synthetic spectrum image, its ADF image and the per-atom truth, as HyperSpy signals.

    Parameters
    ----------
    table : SiteTable
    settings : SampleSettings, optional
    seed : int
    molecules : array_like of int, optional
        Molecule indices to place (default: every usable one).
    db_path : str
        Recorded in the metadata.

    Returns
    -------
    si : exspy EELSSpectrum, navigation (y, x) in nm, energy loss in eV; the truth is in
        ``metadata.Corefit.truth`` (see :func:`napari_corefit.sample_data.truth_from_signal`)
    adf : hyperspy Signal2D titled "ADF", same scan axes
    """
    import hyperspy.api as hs

    settings = settings or SampleSettings()
    rng = np.random.default_rng(seed)
    atoms = arrange_molecules(table, settings, rng, molecules)
    adf, counts, truth = simulate(table, atoms, settings, rng)

    si = hs.signals.Signal1D(counts)
    si.set_signal_type("EELS")
    si.metadata.General.title = "corefit synthetic C K-edge SI"
    adf_sig = hs.signals.Signal2D(adf)
    adf_sig.metadata.General.title = "ADF"
    for s, axes in ((si, si.axes_manager.navigation_axes), (adf_sig, adf_sig.axes_manager
                                                             .signal_axes)):
        # HyperSpy lists x before y
        for ax, name in zip(axes, ("x", "y")):
            ax.name, ax.units, ax.scale, ax.offset = name, "nm", settings.pixel_nm, 0.0
    eax = si.axes_manager.signal_axes[0]
    eax.name, eax.units = "Energy loss", "eV"
    eax.offset, eax.scale = settings.energy.start, settings.energy.step

    mol = atoms["molecule"]
    t = {
        "y_px": atoms["y_px"], "x_px": atoms["x_px"], "y_nm": atoms["y_nm"],
        "x_nm": atoms["x_nm"], "z": atoms["z"], "symbol": ",".join(atoms["symbol"]),
        "molecule": mol, "atom_index": atoms["atom_index"], "site": atoms["site"],
        "copy": atoms["copy"],
        "molecule_key": ",".join(str(table.molecules["key"][m]) for m in mol),
        "smiles": " ".join(str(table.molecules["smiles"][m]) for m in mol),
        "carbon": truth["carbon"], "spectra": truth["spectra"], "dos": truth["dos"],
        "dos_grid": json.dumps(DOS_GRID.to_dict()),
    }
    si.metadata.set_item("Corefit.truth", t)
    si.metadata.set_item("Corefit.sample", json.dumps({
        "generator": "napari_corefit.sample_data.generate.make_sample", "seed": int(seed),
        "settings": settings.to_dict(), "database": _database_info(table, db_path),
        "background_counts_per_pixel_284_300": truth["background_counts_per_pixel_284_300"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dose_meaning": "carbon K-edge counts of one carbon atom over the energy axis",
        "units": {"positions": "px (first pixel centre at 0) and nm", "spectra": "area 1 on "
                  "the SI axis", "dos": "occupied, unoccupied on dos_grid, each area 1"},
    }))
    return si, adf_sig
