"""The spectrum image as the engine receives it: the EELS signal and what goes with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the carbon K edge (1s ionisation, first C 1s -> pi* peak at ~284-286 eV)
CARBON_K_EDGE_EV = 284.0


@dataclass(frozen=True)
class EnergyAxis:
    """Calibration of a spectrum's energy-loss axis, always in eV.

    Parameters
    ----------
    offset : float
        Energy of the first channel (eV).
    scale : float
        Channel width (eV).
    size : int
        Number of channels.
    name : str
        Axis name as read from the file.
    units : str
        Always ``"eV"`` once loaded (other units are converted or refused).
    uniform : bool
        False for a non-uniform axis (then ``values`` holds the channel energies).
    """

    offset: float
    scale: float
    size: int
    name: str = "Energy loss"
    units: str = "eV"
    uniform: bool = True
    axis: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def values(self) -> np.ndarray:
        """Energy of each channel (eV), shape ``(size,)``."""
        if self.axis is not None:
            return np.asarray(self.axis, dtype=float)
        return self.offset + self.scale * np.arange(self.size)

    @property
    def range(self) -> tuple[float, float]:
        """First and last channel energies (eV)."""
        values = self.values
        return float(values[0]), float(values[-1])

    def covers(self, energy: float) -> bool:
        """Whether ``energy`` (eV) lies within the axis."""
        low, high = self.range
        return low <= energy <= high

    def to_dict(self) -> dict:
        """Plain-JSON description (for layer metadata and result files)."""
        return {
            "name": self.name,
            "units": self.units,
            "offset": float(self.offset),
            "scale": float(self.scale),
            "size": int(self.size),
            "uniform": bool(self.uniform),
        }

    @classmethod
    def from_hyperspy(cls, axis) -> "EnergyAxis":
        """Read the calibration of a HyperSpy signal axis (assumed already in eV)."""
        uniform = bool(getattr(axis, "is_uniform", True))
        values = None if uniform else np.asarray(axis.axis, dtype=float)
        offset = float(axis.offset) if uniform else float(values[0])
        scale = float(axis.scale) if uniform else float(np.mean(np.diff(values)))
        return cls(
            offset=offset,
            scale=scale,
            size=int(axis.size),
            name=str(axis.name),
            units="eV",
            uniform=uniform,
            axis=values,
        )


@dataclass
class SpectrumImage:
    """An EELS spectrum image and the images acquired with it.

    Attributes
    ----------
    signal : exspy.signals.EELSSpectrum
        The core-loss spectra; navigation ``(y, x)``, ``(x,)`` or none, signal axis energy loss in
        eV. Lazy (dask) when loaded lazily: nothing is read until asked for.
    adf : hyperspy.signals.Signal2D or None
        The ADF/HAADF image of the same scan (same navigation shape), if the file or a second
        file had one.
    survey : numpy.ndarray
        Total counts per pixel, always 2-D ``(y, x)`` (a line scan gives ``(1, x)``, a single
        spectrum ``(1, 1)``); computed chunk by chunk for lazy signals.
    lowloss : exspy.signals.EELSSpectrum or None
        A low-loss SI of the same scan (zero-loss peak), if given or found in the file.
    path : pathlib.Path or None
        The file the spectra came from.
    energy : EnergyAxis
        Calibration of the signal axis, in eV.
    warnings : list of str
        What was found wrong but tolerated (also issued as :class:`CorefitIOWarning`).
    dead_channels : numpy.ndarray of int
        Channels that are NaN or Inf in every spectrum (dead detector channels): the engine
        interpolates them and masks the spectra whose model window contains one.
    """

    signal: object
    adf: object | None
    survey: np.ndarray
    lowloss: object | None
    path: Path | None
    energy: EnergyAxis
    warnings: list[str] = field(default_factory=list)
    dead_channels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def navigation_shape(self) -> tuple[int, ...]:
        """Scan shape in array order, ``(y, x)``, ``(x,)`` or ``()``."""
        return tuple(self.signal.data.shape[:-1])

    @property
    def lazy(self) -> bool:
        """Whether the spectra are still on disk (dask) rather than in memory."""
        return bool(getattr(self.signal, "_lazy", False))

    @property
    def image(self) -> np.ndarray:
        """The image to show beside the spectra: ADF when there is one, else the survey."""
        if self.adf is not None:
            return np.asarray(self.adf.data).reshape(self.survey.shape)
        return self.survey

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Scan step ``(dy, dx)`` in the navigation axes' units (1.0 where there is no axis)."""
        return tuple(axis["scale"] for axis in self.navigation_axes())

    def navigation_axes(self) -> list[dict]:
        """Calibration of the scan axes as 2-D ``(y, x)``, padded with unit axes.

        Returns
        -------
        list of dict
            Two dicts with ``name``, ``units``, ``offset``, ``scale``, ``size``.
        """
        # HyperSpy lists navigation axes x first; the array order is (y, x)
        axes = [
            {
                "name": str(a.name),
                "units": _units(a.units),
                "offset": float(a.offset) if a.is_uniform else float(a.axis[0]),
                "scale": float(a.scale) if a.is_uniform else 1.0,
                "size": int(a.size),
            }
            for a in self.signal.axes_manager.navigation_axes[::-1]
        ]
        pad = {"name": "", "units": "", "offset": 0.0, "scale": 1.0, "size": 1}
        while len(axes) < 2:
            axes.insert(0, dict(pad, name="y" if axes else "x"))
        return axes


def _units(units) -> str:
    """HyperSpy writes missing units as ``<undefined>`` (a traits marker); make that ''."""
    if units is None:
        return ""
    text = str(units).strip()
    return "" if text in ("<undefined>", "None", "[]") else text
