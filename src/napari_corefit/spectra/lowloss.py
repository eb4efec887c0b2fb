"""A low-loss SI of the same scan: drift, resolution and plural scattering, through exSpy (SPEC 6).

When a low-loss spectrum image was acquired with the core-loss one (e.g. DualEELS), it gives
three corrections, all done with exSpy's own implementations (nothing rewritten here):

- energy drift: the zero-loss peak (ZLP) of each pixel is aligned
  (``EELSSpectrum.align_zero_loss_peak``) and the same shifts are applied to the core-loss SI
  (``also_align``); with ``calibrate`` the ZLP is put at 0 eV and the core-loss offset moves with
  it, as both spectra share the spectrometer's energy reference;
- instrument resolution: the ZLP's full width at half maximum
  (``Signal1D.estimate_peak_width(factor=0.5)``), whose median sets the resolution matching;
- plural scattering: Fourier-ratio deconvolution of the background-subtracted core loss by the
  low loss (``EELSSpectrum.fourier_ratio_deconvolution``), which leaves the single-scattering
  edge convolved with a Gaussian of the ZLP's width.

These functions work on HyperSpy signals (copies; the inputs are left as they are). Lazy signals
are loaded: the alignment and the deconvolution operate on whole spectra of all pixels.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

from napari_corefit.spectra.background import default_background_window, \
    remove_powerlaw_background

__all__ = ["LowLossCorrection", "as_eels", "zlp_fwhm", "instrument_fwhm_from_lowloss",
           "align_energy_drift", "remove_background_signal", "deconvolve_plural_scattering",
           "preprocess_with_lowloss"]


def as_eels(signal, copy=True):
    """An in-memory ``EELSSpectrum`` copy of a 1-D HyperSpy signal (exSpy's methods need it).

    Raises
    ------
    ValueError
        A signal that is not 1-D, or whose signal axis is not uniform.
    """
    if signal.axes_manager.signal_dimension != 1:
        raise ValueError(f"need spectra (signal dimension 1), got signal dimension "
                         f"{signal.axes_manager.signal_dimension}")
    if not signal.axes_manager.signal_axes[0].is_uniform:
        raise ValueError("the energy axis is not uniform; exSpy's low-loss corrections need a "
                         "uniform axis")
    s = signal.deepcopy() if copy else signal
    if s._lazy:
        s.compute(show_progressbar=False)
    if s.data.dtype.kind not in "f":
        s.change_dtype("float32" if s.data.dtype.itemsize <= 2 else "float64")
    if s.metadata.Signal.signal_type != "EELS":
        s.set_signal_type("EELS")
    return s


def _check_pair(core_loss, low_loss):
    if core_loss.axes_manager.navigation_shape != low_loss.axes_manager.navigation_shape:
        raise ValueError(f"the low-loss SI (navigation shape "
                         f"{low_loss.axes_manager.navigation_shape}) is not of the same scan as "
                         f"the core-loss SI ({core_loss.axes_manager.navigation_shape})")


def zlp_fwhm(low_loss, window=None):
    """Per-pixel FWHM of the zero-loss peak, eV (exSpy/HyperSpy ``estimate_peak_width``).

    Parameters
    ----------
    low_loss : hyperspy Signal1D
        Low-loss spectra whose highest peak is the ZLP.
    window : float, optional
        Width (eV) of the window around the maximum used for the estimate.

    Returns
    -------
    ndarray, float64, navigation shape (NaN where it could not be estimated)
    """
    ll = as_eels(low_loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        width = ll.estimate_peak_width(factor=0.5, window=window, show_progressbar=False)
    return np.asarray(width.data, dtype=np.float64)


def instrument_fwhm_from_lowloss(low_loss, window=None):
    """Instrument energy resolution: the median ZLP FWHM over the pixels, eV.

    Raises
    ------
    ValueError
        When no pixel gives a width.
    """
    fw = zlp_fwhm(low_loss, window)
    good = np.isfinite(fw) & (fw > 0)
    if not good.any():
        raise ValueError("the zero-loss peak width could not be measured in any pixel of the "
                         "low-loss SI")
    return float(np.median(fw[good]))


def align_energy_drift(core_loss, low_loss, zlp_range=None, subpixel=True, calibrate=True,
                       crop=True):
    """Remove per-pixel energy drift with the ZLP (exSpy ``align_zero_loss_peak``).

    Parameters
    ----------
    core_loss, low_loss : hyperspy Signal1D
        The same scan (same navigation shape).
    zlp_range : (float, float), optional
        Where to look for the ZLP, eV (default: the whole low-loss axis for the coarse step and
        -3..3 eV for the sub-pixel one, exSpy's defaults).
    subpixel, calibrate, crop : bool
        Passed to exSpy; ``calibrate`` puts the ZLP at 0 eV and shifts the core-loss offset with
        it; ``crop`` cuts the channels that the shifts leave without data in some pixels.

    Returns
    -------
    core_loss, low_loss : EELSSpectrum
        Aligned copies.
    shifts : ndarray, navigation shape
        ZLP position of each pixel before alignment minus the mean, eV (the drift removed).
    """
    _check_pair(core_loss, low_loss)
    cl, ll = as_eels(core_loss), as_eels(low_loss)
    region = ll if zlp_range is None else ll.isig[zlp_range[0]:zlp_range[1]]
    centre = np.asarray(region.estimate_zero_loss_peak_centre().data, dtype=np.float64)
    shifts = centre - np.nanmean(centre)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ll.align_zero_loss_peak(calibrate=calibrate, also_align=[cl], print_stats=False,
                                subpixel=subpixel, signal_range=zlp_range,
                                show_progressbar=False, crop=crop)
    return cl, ll, shifts


def remove_background_signal(core_loss, window=None, edge_onset=None):
    """The project's power-law background removal on a HyperSpy signal.

    Returns
    -------
    subtracted : EELSSpectrum, float32
    fit : PowerLawFit
    window : (float, float)
    """
    cl = as_eels(core_loss)
    energy = np.asarray(cl.axes_manager.signal_axes[0].axis, dtype=np.float64)
    if window is None:
        window = default_background_window(energy) if edge_onset is None else \
            default_background_window(energy, edge_onset=edge_onset)
    data, fit = remove_powerlaw_background(energy, cl.data, window)
    cl.data = data
    cl.metadata.General.title = f"{cl.metadata.General.title} background removed".strip()
    return cl, fit, window


def deconvolve_plural_scattering(core_loss, low_loss, fwhm=None, threshold=None):
    """Fourier-ratio deconvolution (exSpy) of a background-subtracted core-loss SI.

    Parameters
    ----------
    core_loss : hyperspy Signal1D
        Background already removed (exSpy's requirement).
    low_loss : hyperspy Signal1D
        Same scan, same channel width.
    fwhm : float, optional
        Width of the Gaussian the result is convolved with (default: the ZLP's width).
    threshold : float, optional
        Elastic-scattering threshold, eV (default: exSpy's estimate).

    Returns
    -------
    EELSSpectrum
        Single-scattering core loss, same energy axis as ``core_loss``.
    """
    _check_pair(core_loss, low_loss)
    cl, ll = as_eels(core_loss), as_eels(low_loss)
    s_cl = cl.axes_manager.signal_axes[0].scale
    s_ll = ll.axes_manager.signal_axes[0].scale
    if not np.isclose(s_cl, s_ll, rtol=1e-6):
        raise ValueError(f"Fourier-ratio deconvolution needs the same channel width in both SIs "
                         f"(core loss {s_cl:g} eV, low loss {s_ll:g} eV)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return cl.fourier_ratio_deconvolution(ll, fwhm=fwhm, threshold=threshold,
                                              extrapolate_lowloss=True,
                                              extrapolate_coreloss=True)


@dataclass
class LowLossCorrection:
    """What the low-loss SI gave: measured drift, resolution, and what was applied."""

    shifts: np.ndarray | None
    instrument_fwhm_ev: float
    background_window: tuple
    deconvolved: bool
    aligned: bool


def preprocess_with_lowloss(core_loss, low_loss, config=None, align=True, deconvolve=True,
                            zlp_range=None, chunk_pixels=32768, progress=None, cancel=None):
    """The full preprocessing with a low-loss SI of the same scan (SPEC section 6).

    Drift alignment by the ZLP, the project's background removal, Fourier-ratio deconvolution,
    then :func:`~napari_corefit.spectra.pipeline.preprocess` with the instrument resolution from
    the ZLP width (unless ``config.instrument_fwhm_ev`` is set) and the background already
    removed.

    Parameters
    ----------
    core_loss, low_loss : hyperspy Signal1D
    config : PreprocessConfig, optional
    align, deconvolve : bool
        Switch the drift correction / the deconvolution off.
    zlp_range : (float, float), optional
        Passed to :func:`align_energy_drift`.
    chunk_pixels, progress, cancel
        As in :func:`~napari_corefit.spectra.pipeline.preprocess`.

    Returns
    -------
    result : PreprocessResult
        Its ``background`` holds the power-law fit removed before the deconvolution.
    correction : LowLossCorrection
    """
    from napari_corefit.spectra.pipeline import PreprocessConfig, preprocess

    config = PreprocessConfig() if config is None else config
    _check_pair(core_loss, low_loss)
    shifts = None
    if align:
        cl, ll, shifts = align_energy_drift(core_loss, low_loss, zlp_range=zlp_range)
    else:
        cl, ll = as_eels(core_loss), as_eels(low_loss)
    fwhm = config.instrument_fwhm_ev
    if fwhm is None:
        fwhm = instrument_fwhm_from_lowloss(ll)
    if config.background:
        cl, fit, window = remove_background_signal(cl, config.background_window,
                                                   config.edge_onset_ev)
    else:
        fit, window = None, None
    if deconvolve:
        cl = deconvolve_plural_scattering(cl, ll)
    energy = np.asarray(cl.axes_manager.signal_axes[0].axis, dtype=np.float64)
    cfg = dataclasses.replace(config, background=False, instrument_fwhm_ev=float(fwhm))
    res = preprocess(energy, cl.data, cfg, chunk_pixels=chunk_pixels, progress=progress,
                     cancel=cancel, background_fit=fit)
    res.background_window = window
    return res, LowLossCorrection(shifts=shifts, instrument_fwhm_ev=float(fwhm),
                                  background_window=window, deconvolved=bool(deconvolve),
                                  aligned=bool(align))
