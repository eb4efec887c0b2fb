"""Energy grids, background removal, alignment, resampling and normalisation of spectra.

Pure numpy/scipy (torch optional for the background): no Qt, no napari. The pipeline that composes
the steps is :func:`preprocess` (arrays) / :func:`preprocess_signal` (HyperSpy signals); the
low-loss steps that go through exSpy live in :mod:`napari_corefit.spectra.lowloss`.
"""

from napari_corefit.spectra.align import (
    PEAK_SEARCH_EV,
    align_to_first_peak,
    first_peak,
    resample_absolute,
)
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
from napari_corefit.spectra.denoise import pca_basis, pca_denoise
from napari_corefit.spectra.masks import REASON_TEXT, Reason, reason_summary
from napari_corefit.spectra.peaks import PEAK_DEFAULTS, find_first_peak
from napari_corefit.spectra.pipeline import (
    Cancelled,
    PreprocessConfig,
    PreprocessResult,
    preprocess,
    preprocess_signal,
)
from napari_corefit.spectra.resolution import (
    fwhm_to_sigma,
    gaussian_broaden,
    match_resolution,
    matching_sigma,
    sigma_to_fwhm,
)
from napari_corefit.spectra.smoothing import savgol_points, savgol_smooth

__all__ = [
    "ABSOLUTE_GRID",
    "BROADENING_EV",
    "Cancelled",
    "DOS_GRID",
    "EnergyGrid",
    "PEAK_DEFAULTS",
    "PEAK_SEARCH_EV",
    "PowerLawFit",
    "PreprocessConfig",
    "PreprocessResult",
    "REASON_TEXT",
    "Reason",
    "SPECTRUM_GRID",
    "align_to_first_peak",
    "area_normalise",
    "broaden",
    "broaden_ragged",
    "default_background_window",
    "find_first_peak",
    "first_peak",
    "fit_powerlaw",
    "fwhm_to_sigma",
    "gaussian_broaden",
    "interpolate_rows",
    "match_resolution",
    "matching_sigma",
    "pca_basis",
    "pca_denoise",
    "powerlaw_background",
    "preprocess",
    "preprocess_signal",
    "reason_summary",
    "remove_powerlaw_background",
    "resample_absolute",
    "savgol_points",
    "savgol_smooth",
    "sigma_to_fwhm",
]
