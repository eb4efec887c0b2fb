"""The recipe: every default of the quantum-chemistry calculation in one object (SPEC section 1).

A :class:`Recipe` is saved with every database shard, so that a record can always be traced to
the method that made it, and two shards made with different recipes are never mixed silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

__all__ = ["Recipe", "HARTREE_EV"]

#: CODATA 2018 Hartree energy in eV (the value PySCF uses).
HARTREE_EV = 27.211386245988


@dataclass(frozen=True)
class Recipe:
    """How a site's core-hole spectrum and ground-state site DOS are computed.

    Defaults follow SPEC section 1; the speed settings (grid level, tolerance) were chosen from the
    measurements in docs/backend.md, not guessed.
    """

    functional: str = "PBE"
    #: uniform basis of the ground state that gives the site DOS
    basis: str = "6-31G*"
    #: core-valence basis on the excited carbon (localises the hole; SPEC 1.3), plus
    #: aug-cc-pVDZ's diffuse s, p, d shells: without them the Rydberg-like final states inside
    #: the window are missing and the broadened spectra change completely (median cosine 0.57,
    #: benchmarks/bench_diffuse.py) at 1.2x the cost
    core_basis: str = "cc-pCVDZ+diffuse"
    density_fit: bool = True
    #: None: PySCF's default auxiliary basis for the orbital basis
    auxbasis: str | None = None
    #: DFT integration grid of the SCF (PySCF level)
    grid_level: int = 0
    #: the converged states' XC energy is re-integrated on this grid (None: off); with
    #: grid_level 0 this keeps energies within a few meV of level-1 SCFs (docs/backend.md)
    energy_grid_level: int | None = 1
    conv_tol: float = 1e-6
    max_cycle: int = 60
    #: occupation of the core-hole state during its SCF. ``"aufbau"``: the alpha orbital most like
    #: the localised 1s stays empty and the other alpha electrons fill the lowest orbitals,
    #: so the excited electron sits in the lowest unoccupied orbital *of the core-hole state*
    #: (what the paper's CASTEP core-hole calculations do). ``"lumo"`` (recipe version 2): every
    #: orbital followed by maximum overlap from the ground state, the excited electron kept in
    #: the ground state's LUMO; on 7 of 26 random database sites that converged to a state with
    #: an empty valence orbital 0.2-2.8 eV below the excited electron's (docs/backend.md)
    occupation: str = "aufbau"
    #: a hole whose Loewdin population on the target carbon is below this is a failure
    min_hole_population: float = 0.9
    #: spectrum sticks kept, eV relative to the site's E_exc (model grid reaches +15 eV + tails)
    spectrum_window_ev: tuple = (-0.01, 20.0)
    #: DOS sticks kept, eV relative to E_F (model grid -15..15 eV + tails)
    dos_window_ev: tuple = (-18.0, 18.0)
    #: sticks with less s+p weight on the site than this are not stored (below the model's error)
    min_dos_weight: float = 2e-3
    #: spectrum sticks weaker than this fraction of the site's strongest stick are not stored
    min_spectrum_fraction: float = 2e-3
    #: version of the recipe's meaning; bump when a change makes old records incomparable
    version: int = 3

    def __post_init__(self):
        if self.occupation not in ("aufbau", "lumo"):
            raise ValueError(f"occupation must be 'aufbau' or 'lumo', got {self.occupation!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spectrum_window_ev"] = list(self.spectrum_window_ev)
        d["dos_window_ev"] = list(self.dos_window_ev)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown recipe fields {sorted(unknown)}")
        d = dict(d)
        if "occupation" not in d and d.get("version", cls.version) < 3:
            # recipes before version 3 followed the ground state's LUMO (a dict without a
            # version is a partial override of today's defaults)
            d["occupation"] = "lumo"
        for key in ("spectrum_window_ev", "dos_window_ev"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def fingerprint(self) -> str:
        """Short hash of the recipe: shards with different fingerprints are different data."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
