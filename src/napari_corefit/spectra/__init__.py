"""Energy grids, background removal, alignment, resampling and normalisation of spectra."""

from napari_corefit.spectra.background import (
    PowerLawFit,
    default_background_window,
    fit_powerlaw,
    powerlaw_background,
    remove_powerlaw_background,
)
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
    "PowerLawFit",
    "area_normalise",
    "broaden",
    "broaden_ragged",
    "default_background_window",
    "fit_powerlaw",
    "find_first_peak",
    "interpolate_rows",
    "powerlaw_background",
    "remove_powerlaw_background",
]
