"""PySCF backend: the training database of core-hole spectra and ground-state site DOS.

Reading a database (:func:`load_database`, :mod:`curves`) needs only numpy and h5py; computing
needs PySCF (``pip install 'napari-corefit[backend]'``) and is imported on first use.
"""

from napari_corefit.backend.molecules import Molecule, qm9_molecules, read_xyz
from napari_corefit.backend.recipe import Recipe
from napari_corefit.backend.storage import SiteTable, load_database

__all__ = ["Molecule", "Recipe", "SiteTable", "load_database", "qm9_molecules", "read_xyz",
           "compute_molecule", "build_database"]


def __getattr__(name):
    # PySCF is only needed to compute: import it when a computing function is asked for
    if name == "compute_molecule":
        from napari_corefit.backend.compute import compute_molecule

        return compute_molecule
    if name == "build_database":
        from napari_corefit.backend.runner import build_database

        return build_database
    raise AttributeError(name)
