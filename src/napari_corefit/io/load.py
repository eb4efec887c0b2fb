"""Read EELS spectrum images through HyperSpy/RosettaSciIO and check that they can be used."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from napari_corefit.io.errors import CorefitIOError, CorefitIOWarning, file_message
from napari_corefit.io.spectrum_image import (
    CARBON_K_EDGE_EV,
    EnergyAxis,
    SpectrumImage,
    _units,
)

#: file extensions this package reads (and registers with napari)
SUPPORTED_EXTENSIONS = (".hspy", ".zspy", ".dm3", ".dm4", ".emd", ".msa")

#: files (or .zspy directories) above this size open lazily when ``lazy=None``
LAZY_ABOVE_BYTES = 256 * 2**20

# conversion factors to eV for energy units that files do carry
# (case matters: meV is not MeV; "ev"/"EV" are spelling slips for eV)
_TO_EV = {"eV": 1.0, "ev": 1.0, "EV": 1.0, "keV": 1e3, "kev": 1e3, "KeV": 1e3, "meV": 1e-3}

# titles of the simultaneous images that are annular dark field (Velox: "HAADF", "DF-S", DM:
# "ADF", "HAADF", NCEM/prismatic: "annular_detector")
_ADF_TITLE = re.compile(r"(HAADF|ADF|\bDF\b|DF[-_ ]|annular|dark.?field)", re.IGNORECASE)


def load_spectrum_image(
    path,
    adf=None,
    lowloss=None,
    lazy: bool | None = None,
    edge: float | None = CARBON_K_EDGE_EV,
    require_edge: bool = True,
) -> SpectrumImage:
    """Read an EELS spectrum image and pair it with its ADF image and a survey image.

    Parameters
    ----------
    path : str, os.PathLike or hyperspy signal
        A ``.hspy``, ``.zspy``, ``.dm3``, ``.dm4``, ``.emd`` (Velox or NCEM) or ``.msa`` file.
        Files that hold several signals (Velox: HAADF + EELS + EDS) are searched for the EELS
        spectrum image that covers ``edge``. A HyperSpy signal is checked the same way.
    adf : str, os.PathLike, hyperspy.signals.Signal2D or None
        The ADF/HAADF image of the same scan, as a file or a signal. ``None`` takes one from the
        file when it has one of the same scan shape.
    lowloss : str, os.PathLike, hyperspy signal or None
        A low-loss spectrum image of the same scan (zero-loss peak), as a file or a signal.
        ``None`` takes a second EELS signal from the file when there is one that covers 0 eV.
    lazy : bool or None
        Keep the spectra on disk (dask) and read them chunk by chunk. ``None`` opens files larger
        than ``LAZY_ABOVE_BYTES`` lazily.
    edge : float or None
        Energy loss (eV) that the signal axis must cover; ``None`` skips the check.
    require_edge : bool
        False: an axis that does not cover ``edge`` is a warning, not an error (the napari
        reader opens any EELS file for viewing; the engine refuses it later, with the reason).

    Returns
    -------
    SpectrumImage

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CorefitIOError
        When the file cannot be read or cannot be used (no EELS spectra, more than two scan
        dimensions, an empty axis, no energy calibration, energy axis not covering ``edge``, all
        pixels NaN). The message names the file and the problem.

    Warns
    -----
    CorefitIOWarning
        For what can be used with care: energy units converted to eV or missing (assumed eV),
        NaN/Inf pixels, negative counts.

    Examples
    --------
    >>> import numpy as np, hyperspy.api as hs, tempfile, os
    >>> s = hs.signals.Signal1D(np.ones((2, 3, 200), dtype="float32"))
    >>> s.axes_manager.signal_axes[0].units = "eV"
    >>> s.axes_manager.signal_axes[0].offset = 270.0
    >>> s.axes_manager.signal_axes[0].scale = 0.1
    >>> path = os.path.join(tempfile.mkdtemp(), "si.hspy")
    >>> s.save(path)
    >>> si = load_spectrum_image(path)
    >>> si.survey.shape, si.energy.range
    ((2, 3), (270.0, 289.9))
    """
    if _is_signal(path):  # a signal already in memory (or lazy): check it the same way
        signals, path = [_spectra_as_signal1d(path)], None
        lazy = bool(getattr(signals[0], "_lazy", False))
    else:
        path = _check_path(path)
        if lazy is None:
            lazy = _size_on_disk(path) > LAZY_ABOVE_BYTES
        signals = _read(path, lazy)
    signal = _pick_spectrum_image(signals, path, edge)
    notes: list[str] = []
    _check_shape(signal, path)
    energy = _check_energy_axis(signal, path, edge, notes, require_edge)
    if signal.metadata.Signal.signal_type != "EELS":
        # generic Signal1D (MSA, hspy written without a type): give it exSpy's EELS methods
        signal.set_signal_type("EELS")
    survey, dead = _survey_and_checks(signal, path, notes)

    if adf is None:
        adf_signal = _pick_adf(signals, signal, path)
    else:
        adf_signal = _load_adf(adf, signal, path, lazy)
    if lowloss is None:
        lowloss_signal = _pick_lowloss(signals, signal)
    else:
        lowloss_signal = _load_lowloss(lowloss, signal, path, lazy)
    return SpectrumImage(
        dead_channels=dead,
        signal=signal,
        adf=adf_signal,
        survey=survey,
        lowloss=lowloss_signal,
        path=path,
        energy=energy,
        warnings=notes,
    )


def _is_signal(obj) -> bool:
    return hasattr(obj, "axes_manager") and hasattr(obj, "data")


def _check_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(file_message(path, "no such file"))
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise CorefitIOError(
            file_message(
                path,
                f"unsupported file type {path.suffix!r}; "
                f"readable: {', '.join(SUPPORTED_EXTENSIONS)}",
            )
        )
    if path.is_file() and path.stat().st_size == 0:
        raise CorefitIOError(file_message(path, "the file is empty (0 bytes)"))
    return path


def _size_on_disk(path: Path) -> int:
    if path.is_dir():  # .zspy is a zarr directory store
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _read(path: Path, lazy: bool) -> list:
    """All signals in the file, as a list; any reader failure becomes a CorefitIOError."""
    import hyperspy.api as hs

    try:
        with warnings.catch_warnings():
            # readers warn about metadata they do not map; that is not the user's problem
            warnings.simplefilter("ignore")
            loaded = hs.load(path, lazy=lazy)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - every reader fails in its own way
        raise CorefitIOError(
            file_message(
                path,
                "cannot be read (truncated, corrupt or not this format?): "
                f"{type(exc).__name__}: {exc}",
            )
        ) from exc
    signals = loaded if isinstance(loaded, list) else [loaded]
    if not signals:
        raise CorefitIOError(file_message(path, "the file holds no signal"))
    return [_spectra_as_signal1d(s) for s in signals]


def _spectra_as_signal1d(signal):
    """Give spectra stored without a navigation/signal split (NCEM EMD) their energy axis back.

    NCEM EMD files keep axis names and units but not which axes navigate, so HyperSpy reads a
    spectrum image as a 3-D signal with no navigation axes. When the last array axis is an energy,
    make it the signal axis (lazy signals stay lazy).
    """
    axes = signal.axes_manager
    if axes.navigation_dimension == 0 and axes.signal_dimension >= 2:
        if _units(axes.signal_axes[0].units) in _TO_EV:
            return signal.as_signal1D(0)
    return signal


def _describe(signal) -> str:
    return f"{type(signal).__name__} {signal.axes_manager._get_dimension_str()}"


def _is_spectrum_candidate(signal) -> bool:
    signal_type = str(signal.metadata.get_item("Signal.signal_type", "") or "")
    return signal.axes_manager.signal_dimension == 1 and not signal_type.upper().startswith("EDS")


def _energy_range_ev(signal) -> tuple[float, float] | None:
    """Signal-axis range in eV, or None when the axis has no energy units."""
    axis = signal.axes_manager.signal_axes[0]
    factor = _TO_EV.get(_units(axis.units))
    if factor is None or axis.size == 0:
        return None
    return float(axis.axis[0]) * factor, float(axis.axis[-1]) * factor


def _pick_spectrum_image(signals: list, path: Path, edge: float | None):
    """The 1-D signal to use: EELS covering the edge, most pixels first."""
    candidates = [s for s in signals if _is_spectrum_candidate(s)]
    if not candidates:
        found = ", ".join(_describe(s) for s in signals)
        raise CorefitIOError(
            file_message(path, f"holds no 1-D EELS spectrum signal (found: {found})")
        )
    if len(candidates) == 1:
        return candidates[0]

    def rank(signal):
        covered = _energy_range_ev(signal)
        covers_edge = edge is None or (covered is not None and covered[0] <= edge <= covered[1])
        is_eels = signal.metadata.Signal.signal_type == "EELS"
        n_pixels = int(np.prod(signal.axes_manager.navigation_shape or (1,)))
        return (covers_edge, is_eels, n_pixels)

    return max(candidates, key=rank)


def _check_energy_axis(signal, path: Path, edge: float | None, notes: list,
                       require_edge: bool = True) -> EnergyAxis:
    axis = signal.axes_manager.signal_axes[0]
    if axis.size == 0:
        raise CorefitIOError(file_message(path, "the energy axis has no channels"))
    units = _units(axis.units)
    uniform = bool(getattr(axis, "is_uniform", True))
    if not units:
        if uniform and axis.offset == 0 and axis.scale == 1:
            raise CorefitIOError(
                file_message(
                    path,
                    "the energy axis has no calibration (no units, offset 0, scale 1: "
                    "channel numbers); calibrate it (offset, dispersion in eV) and save again",
                )
            )
        _note(notes, path, f"the energy axis has no units; assuming eV "
                           f"(offset {axis.offset:g}, scale {axis.scale:g})")
        axis.units = "eV"
    elif units not in _TO_EV:
        raise CorefitIOError(
            file_message(path, f"the signal axis is in {units!r}, not an energy loss in eV")
        )
    elif _TO_EV[units] == 1.0:
        axis.units = "eV"
    else:
        factor = _TO_EV[units]
        if uniform:
            axis.offset, axis.scale = axis.offset * factor, axis.scale * factor
        else:
            axis.axis = axis.axis * factor
        axis.units = "eV"
        _note(notes, path, f"energy axis converted from {units} to eV")
    energy = EnergyAxis.from_hyperspy(axis)
    if uniform and not energy.scale > 0:
        raise CorefitIOError(
            file_message(path, f"the energy axis has a non-positive step ({energy.scale:g} eV)")
        )
    if edge is not None and not energy.covers(edge):
        low, high = energy.range
        problem = (f"the energy axis covers {low:.1f}-{high:.1f} eV and does not contain the "
                   f"carbon K edge at {edge:g} eV")
        if require_edge:
            raise CorefitIOError(file_message(path, problem))
        _note(notes, path, f"{problem}: opened for viewing only, no carbon DOS can be "
                           "predicted from it")
    return energy


def _check_shape(signal, path: Path) -> None:
    shape = signal.data.shape
    if any(n == 0 for n in shape):
        raise CorefitIOError(file_message(path, f"the data have an empty axis (shape {shape})"))
    n_nav = signal.axes_manager.navigation_dimension
    if n_nav > 2:
        raise CorefitIOError(
            file_message(
                path,
                f"the spectra have {n_nav} navigation dimensions ({_describe(signal)}); "
                "expected a spectrum image (y, x), a line scan or a single spectrum. "
                "Select one frame or sum the stack first",
            )
        )


def _block_stats(block: np.ndarray) -> np.ndarray:
    """Per spectrum: total of the finite counts, how many values are NaN/Inf, negatives."""
    finite = np.isfinite(block)
    return np.stack(
        [
            np.where(finite, block, 0).sum(axis=-1, dtype=np.float64),
            (~finite).sum(axis=-1),
            (block < 0).sum(axis=-1),
        ],
        axis=-1,
    )


def _survey_and_checks(signal, path: Path, notes: list) -> tuple[np.ndarray, np.ndarray]:
    """Total counts per pixel and counts of NaN/Inf/negative values, in one pass over the data.

    Returns the survey and the dead channels (NaN/Inf in every spectrum).

    Lazy data are read chunk by chunk (never whole); in-memory data in blocks of rows, so that
    the temporaries stay small beside a large SI.
    """
    data = signal.data
    if getattr(signal, "_lazy", False):
        if data.numblocks[-1] > 1:  # each block must hold whole spectra
            data = data.rechunk({data.ndim - 1: -1})
        stats = data.map_blocks(_block_stats, chunks=data.chunks[:-1] + ((3,),),
                                dtype=np.float64)
        try:
            stats = stats.compute()
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated file fails only when read
            raise CorefitIOError(
                file_message(path, f"reading the spectra failed (truncated or corrupt?): {exc}")
            ) from exc
    else:
        flat = np.asarray(data).reshape(-1, data.shape[-1])
        rows = max(1, 2**22 // max(flat.shape[1], 1))  # ~16 MB of float32 per block
        stats = np.concatenate(
            [_block_stats(flat[i: i + rows]) for i in range(0, len(flat), rows)]
            or [np.zeros((0, 3))]
        ).reshape(data.shape[:-1] + (3,))
    # a copy, not a view: a view would keep the whole (..., 3) stats array alive with the SI
    survey = np.array(stats[..., 0], dtype=np.float64)
    nonfinite = stats[..., 1]
    negative = int(stats[..., 2].sum())

    n_pixels = int(np.prod(data.shape[:-1], dtype=int))
    n_channels = int(data.shape[-1])
    dead = np.zeros(0, np.int64)
    if (nonfinite > 0).any():
        if (nonfinite >= n_channels).all():
            raise CorefitIOError(file_message(path, "every spectrum contains NaN or Inf values "
                                                    "only"))
        if (nonfinite > 0).all():
            from napari_corefit.spectra.pipeline import find_dead_channels

            dead = find_dead_channels(data)
        if dead.size:
            energy = signal.axes_manager.signal_axes[0].axis
            where = ", ".join(f"{energy[i]:.2f}" for i in dead[:8]) + (
                ", ..." if dead.size > 8 else "")
            _note(notes, path, f"{dead.size} channel(s) are NaN or Inf in every spectrum (at "
                               f"{where} eV: dead detector channels?); they are interpolated "
                               "from their neighbours, and a spectrum whose model window (first "
                               "peak -1 to +15 eV) contains one is masked")
        bad = int((nonfinite > dead.size).sum())
        if bad == n_pixels:
            raise CorefitIOError(file_message(path, "every spectrum contains NaN or Inf values"))
        if bad:
            _note(notes, path, f"{bad} of {n_pixels} spectra contain NaN or Inf values; "
                               "those pixels will be masked")
    if negative:
        fraction = negative / data.size
        _note(notes, path, f"{negative} channel values ({fraction:.2%}) are negative: the data "
                           "are not raw counts (dark reference or background already "
                           "subtracted?); noise estimates assume counts")
    return survey.reshape(_as_2d(data.shape[:-1])), dead


def _as_2d(nav_shape: tuple) -> tuple[int, int]:
    nav_shape = tuple(nav_shape)
    return ((1,) * (2 - len(nav_shape)) + nav_shape)[-2:] if len(nav_shape) <= 2 else nav_shape


def _note(notes: list, path: Path, problem: str) -> None:
    message = file_message(path, problem)
    notes.append(message)
    warnings.warn(message, CorefitIOWarning, stacklevel=4)


def _same_scan(image, signal) -> bool:
    nav = tuple(signal.data.shape[:-1])
    return tuple(image.data.shape) == nav or tuple(image.data.shape) == _as_2d(nav)


def _pick_adf(signals: list, signal, path: Path):
    """The ADF/HAADF image of the same scan among the file's signals, or None."""
    if signal.axes_manager.navigation_dimension == 0:
        return None
    images = [
        s for s in signals
        if s is not signal and s.axes_manager.signal_dimension == 2
        and s.axes_manager.navigation_dimension == 0 and _same_scan(s, signal)
    ]
    named = [s for s in images if _ADF_TITLE.search(str(s.metadata.General.title))]
    if named:
        return named[0]
    return None


def _load_adf(adf, signal, path: Path, lazy: bool):
    source = adf
    if isinstance(adf, (str, os.PathLike)):
        adf_path = _check_path(adf)
        images = [s for s in _read(adf_path, lazy) if s.axes_manager.signal_dimension == 2]
        if not images:
            raise CorefitIOError(file_message(adf_path, "holds no 2-D image for the ADF"))
        matching = [s for s in images if _same_scan(s, signal)]
        named = [s for s in matching if _ADF_TITLE.search(str(s.metadata.General.title))]
        if not matching:
            raise CorefitIOError(
                file_message(
                    adf_path,
                    f"no image has the spectrum image's scan shape "
                    f"{tuple(signal.data.shape[:-1])} (found "
                    f"{', '.join(str(s.data.shape) for s in images)})",
                )
            )
        return (named or matching)[0]
    if not _same_scan(source, signal):
        raise CorefitIOError(
            file_message(
                path,
                f"the ADF image has shape {tuple(source.data.shape)}, the spectrum image's scan "
                f"is {tuple(signal.data.shape[:-1])}",
            )
        )
    return source


def _covers_zero_loss(signal) -> bool:
    covered = _energy_range_ev(signal)
    return covered is not None and covered[0] <= 0.0 <= covered[1]


def _pick_lowloss(signals: list, signal):
    """A second EELS signal of the same scan that holds the zero-loss peak, or None."""
    for other in signals:
        if (
            other is not signal and _is_spectrum_candidate(other)
            and other.data.shape[:-1] == signal.data.shape[:-1] and _covers_zero_loss(other)
        ):
            if other.metadata.Signal.signal_type != "EELS":
                other.set_signal_type("EELS")
            return other
    return None


def _load_lowloss(lowloss, signal, path: Path, lazy: bool):
    if isinstance(lowloss, (str, os.PathLike)):
        lowloss_path = _check_path(lowloss)
        candidates = [s for s in _read(lowloss_path, lazy) if _is_spectrum_candidate(s)]
        if not candidates:
            raise CorefitIOError(file_message(lowloss_path, "holds no 1-D EELS spectrum signal"))
        with_zlp = [s for s in candidates if _covers_zero_loss(s)]
        if not with_zlp:
            raise CorefitIOError(
                file_message(lowloss_path, "no spectrum covers 0 eV (no zero-loss peak)")
            )
        source, where = with_zlp[0], lowloss_path
    else:
        source, where = lowloss, path
    if source.data.shape[:-1] != signal.data.shape[:-1]:
        raise CorefitIOError(
            file_message(
                where,
                f"the low-loss scan shape {tuple(source.data.shape[:-1])} differs from the "
                f"core-loss scan shape {tuple(signal.data.shape[:-1])}",
            )
        )
    if source.metadata.Signal.signal_type != "EELS":
        source.set_signal_type("EELS")
    return source
