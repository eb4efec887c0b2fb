"""Energy grids, background removal, alignment, resampling and normalisation of spectra."""

from napari_corefit.spectra.grids import (
    ABSOLUTE_GRID,
    BROADENING_EV,
    DOS_GRID,
    SPECTRUM_GRID,
    EnergyGrid,
    area_normalise,
    broaden,
    broaden_ragged,
    interpolate_rows,
)
from napari_corefit.spectra.peaks import PEAK_DEFAULTS, find_first_peak

__all__ = [
    "ABSOLUTE_GRID",
    "BROADENING_EV",
    "DOS_GRID",
    "SPECTRUM_GRID",
    "EnergyGrid",
    "PEAK_DEFAULTS",
    "area_normalise",
    "broaden",
    "broaden_ragged",
    "find_first_peak",
    "interpolate_rows",
]
