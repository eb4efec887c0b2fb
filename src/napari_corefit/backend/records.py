"""Compact, pickle-free serialisation of a molecule's records (journal payloads and shard rows).

Sticks are trimmed to the windows the grids can use and stored in compact dtypes: energies
relative to the site's E_exc (spectrum) or E_F (DOS) in float16 (0.008-0.016 eV steps at
10-20 eV, far below the 0.5 eV broadening), weights in float16; E_exc, E_F and the 1s energies in
float32 (float16 steps 0.25 eV at 285 eV). docs/backend.md gives the measured precision loss.
"""

from __future__ import annotations

import io
import json

import numpy as np

__all__ = ["record_to_arrays", "arrays_to_bytes", "bytes_to_arrays", "round_significand",
           "spec_weight", "SITE_FIELDS"]

# per-site scalar fields and their stored dtypes
SITE_FIELDS = {
    "atom_index": np.int16,
    "multiplicity": np.int16,
    "excitation_energy": np.float32,
    "core_1s": np.float32,
    "hole_population": np.float16,
    "s2": np.float16,
    "seconds": np.float32,
    "cycles": np.int16,
}


def _trim_spectrum(core, recipe):
    e = np.asarray(core.spec_energy, dtype=np.float64)
    xyz = np.asarray(core.spec_xyz, dtype=np.float64).reshape(-1, 3)
    if e.size == 0:
        return np.zeros(0, np.float16), np.zeros(0, np.float16)
    lo, hi = recipe.spectrum_window_ev
    # orientation-averaged (SPEC 1.3): the x, y, z parts are not stored since format 4
    inten = xyz.mean(axis=1)
    keep = (e >= lo) & (e <= hi) & (inten >= recipe.min_spectrum_fraction * inten.max())
    keep[0] = True  # the first transition is kept even when it is dark: it defines E_exc
    return e[keep].astype(np.float16), spec_weight({"spec_xyz": xyz[keep]})


def spec_weight(arrays) -> np.ndarray:
    """The stored spectrum stick weights of a record, from either layout.

    Records from journals and shard parts written before format 4 carry the x, y, z parts
    (``spec_xyz``, atomic units); their mean, in units of ``1 / SPEC_WEIGHT_SCALE`` and rounded
    as format 4 stores it, is the weight.
    """
    if "spec_weight" in arrays:
        return round_significand(arrays["spec_weight"], SPEC_WEIGHT_BITS)  # idempotent
    weight = np.asarray(arrays["spec_xyz"], np.float64).reshape(-1, 3).mean(axis=1)
    return round_significand(weight * SPEC_WEIGHT_SCALE, SPEC_WEIGHT_BITS)


def round_significand(values, bits):
    """Values as float16 with only ``bits`` of the 10 significand bits kept (rounded).

    The dropped low bits are zeros, which the shuffle filter and gzip store almost for free:
    7 bits keep every value within 0.4 % (relative) and take 13 % fewer bytes than full float16
    (docs/backend.md).

    Examples
    --------
    >>> round_significand([1.0, 0.1234, 3.3e-3], 7).tolist()
    [1.0, 0.12353515625, 0.0032958984375]
    """
    u = np.asarray(values, dtype=np.float16).view(np.uint16).astype(np.uint32)
    drop = 10 - int(bits)
    if drop <= 0:
        return u.astype(np.uint16).view(np.float16)
    u = ((u + (1 << (drop - 1))) >> drop) << drop  # round half up on the magnitude
    return u.astype(np.uint16).view(np.float16)


#: significand bits kept of the stored DOS weights (targets: 0.35 % of a curve's maximum at most)
DOS_WEIGHT_BITS = 7
#: significand bits kept of the stored spectrum stick weights (format 4): all of float16's.
#: 7 bits would save another 4 % of a part, but the first-peak alignment of near-degenerate
#: spectra is sensitive to the weights (docs/backend.md, format 3)
SPEC_WEIGHT_BITS = 10
#: format 4 stores spectrum weights in units of 1e-3 a.u.: the dipole weights (1e-6 ... 2e-3 a.u.)
#: then sit in float16's normal range (above 6.1e-5), where every weight keeps 0.05 %
SPEC_WEIGHT_SCALE = 1e3


def _trim_dos(dos, recipe):
    # only the s and p weights are kept: the target is the C s+p DOS; the d weight (6-31G*'s
    # polarisation shell) is computed but not stored (format 3)
    e = np.asarray(dos["energy"], dtype=np.float64)
    sp = dos["s"] + dos["p"]
    lo, hi = recipe.dos_window_ev
    keep = (e >= lo) & (e <= hi) & (sp >= recipe.min_dos_weight)
    return {
        "dos_energy": e[keep].astype(np.float16),
        "dos_occ": np.rint(dos["occupation"][keep]).astype(np.uint8),
        "dos_s": round_significand(dos["s"][keep], DOS_WEIGHT_BITS),
        "dos_p": round_significand(dos["p"][keep], DOS_WEIGHT_BITS),
    }


def record_to_arrays(rec, recipe) -> dict:
    """Flatten a :class:`MoleculeRecord` into named numpy arrays plus a JSON ``meta`` string."""
    meta = {
        "key": rec.key, "name": rec.name, "source": rec.source, "smiles": rec.smiles,
        "geometry": rec.geometry, "status": rec.status, "seconds": float(rec.seconds),
        "gs_seconds": float(rec.gs_seconds), "fermi_ev": float(rec.fermi_ev),
        "site_status": [s.status for s in rec.sites],
        "site_stage": [s.core.stage for s in rec.sites],
        "equivalent": [list(map(int, s.equivalent)) for s in rec.sites],
    }
    out = {
        "symbols": np.array(rec.symbols, dtype="S2"),
        "coords": np.asarray(rec.coords, dtype=np.float32).reshape(-1, 3),
    }
    for name, dtype in SITE_FIELDS.items():
        vals = []
        for s in rec.sites:
            c = s.core
            vals.append({
                "atom_index": s.atom_index, "multiplicity": s.multiplicity,
                "excitation_energy": c.excitation_energy, "core_1s": s.core_1s_ev,
                "hole_population": c.hole_population, "s2": c.s2, "seconds": c.seconds,
                "cycles": c.cycles,
            }[name])
        out[name] = np.array(vals, dtype=dtype)
    spec_e, spec_x, spec_n = [], [], []
    dos_parts, dos_n = [], []
    for s in rec.sites:
        if s.status == "ok":
            e, x = _trim_spectrum(s.core, recipe)
        else:
            e, x = np.zeros(0, np.float16), np.zeros(0, np.float16)
        spec_e.append(e), spec_x.append(x), spec_n.append(e.size)
        d = _trim_dos(s.dos, recipe)
        dos_parts.append(d), dos_n.append(d["dos_energy"].size)
    out["spec_count"] = np.array(spec_n, dtype=np.int32)
    out["spec_energy"] = np.concatenate(spec_e) if spec_e else np.zeros(0, np.float16)
    out["spec_weight"] = np.concatenate(spec_x) if spec_x else np.zeros(0, np.float16)
    out["dos_count"] = np.array(dos_n, dtype=np.int32)
    for k in ("dos_energy", "dos_occ", "dos_s", "dos_p"):
        dt = np.uint8 if k == "dos_occ" else np.float16
        out[k] = np.concatenate([d[k] for d in dos_parts]) if dos_parts else np.zeros(0, dt)
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return out


def arrays_to_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def bytes_to_arrays(blob: bytes) -> dict:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(out["meta"].tobytes().decode())
    return out
