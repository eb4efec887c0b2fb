"""Save result signals as HyperSpy files, so that ``hs.load`` gives them back with their axes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from napari_corefit.io.errors import CorefitIOError, file_message

#: formats that keep every axis, metadata and dtype (HyperSpy's own)
RESULT_EXTENSIONS = (".hspy", ".zspy")


def write_results(path, signals, overwrite: bool = True, axes=None) -> list[Path]:
    """Write one signal, or several named ones, as ``.hspy``/``.zspy`` files.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, ending in ``.hspy`` or ``.zspy``. Missing folders are created.
    signals : hyperspy signal or mapping of str to hyperspy signal
        One signal is written to ``path``. A mapping writes each signal to ``<stem>_<name>``
        beside ``path`` (e.g. ``result_dos.hspy``, ``result_occupied.hspy``); the first one
        whose name is ``""`` goes to ``path`` itself.
    overwrite : bool
        Replace existing files; otherwise an existing file is an error.
    axes : list of dict, optional
        Axes of the numpy arrays among ``signals``, in array order, each with ``name``,
        ``units``, ``scale``, ``offset`` (and optionally ``size``); the last one is the signal
        axis (e.g. energy), the others navigate. Arrays need them: a file with uncalibrated,
        unnamed axes is not a result one can read back. HyperSpy signals keep their own.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order given.

    Raises
    ------
    CorefitIOError
        For another extension, an existing file with ``overwrite=False``, or a failed write.

    Examples
    --------
    >>> import numpy as np, hyperspy.api as hs, tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "res.hspy")
    >>> s = hs.signals.Signal1D(np.zeros((2, 2, 5)))
    >>> [p.name for p in write_results(out, {"": s, "std": s})]
    ['res.hspy', 'res_std.hspy']

    Numpy arrays, with their axes:

    >>> axes = [{"name": "x", "units": "nm", "scale": 0.1, "offset": 0.0},
    ...         {"name": "Energy", "units": "eV", "scale": 0.1, "offset": -15.0}]
    >>> p, = write_results(out, np.ones((3, 300), "float32"), axes=axes)
    >>> hs.load(p).axes_manager.signal_axes[0].offset
    -15.0
    """
    path = Path(path)
    if path.suffix.lower() not in RESULT_EXTENSIONS:
        raise CorefitIOError(
            file_message(path, f"results are written as {' or '.join(RESULT_EXTENSIONS)}")
        )
    items = signals.items() if isinstance(signals, Mapping) else [("", signals)]
    items = [(name, _as_signal(path, name, value, axes)) for name, value in items]
    written = []
    for name, signal in items:
        target = path if not name else path.with_name(f"{path.stem}_{name}{path.suffix}")
        if target.exists() and not overwrite:
            raise CorefitIOError(file_message(target, "exists already (overwrite=False)"))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            signal.save(target, overwrite=True)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - h5py, zarr and OS errors alike
            raise CorefitIOError(
                file_message(target, f"cannot be written: {type(exc).__name__}: {exc}")
            ) from exc
        written.append(target)
    return written


def _as_signal(path, name, value, axes):
    """A HyperSpy signal as it is; a numpy array as a signal with ``axes``."""
    if hasattr(value, "save") and hasattr(value, "axes_manager"):
        return value
    import numpy as np

    target = path if not name else path.with_name(f"{path.stem}_{name}{path.suffix}")
    data = np.asarray(value)
    if axes is None:
        raise CorefitIOError(file_message(
            target, f"a {type(value).__name__} of shape {data.shape} has no axes: pass "
                    "axes=[{'name', 'units', 'scale', 'offset'} per array axis, the last one "
                    "the signal axis] or a HyperSpy signal"))
    if len(axes) != data.ndim or data.ndim == 0:
        raise CorefitIOError(file_message(
            target, f"{len(axes)} axes given for an array of shape {data.shape}"))
    import hyperspy.api as hs

    full = []
    for i, (a, n) in enumerate(zip(axes, data.shape)):
        if "size" in a and int(a["size"]) != n:
            raise CorefitIOError(file_message(
                target, f"axis {a.get('name', i)!r} has size {a['size']}, the array {n}"))
        full.append({"name": str(a.get("name", f"axis {i}")), "units": str(a.get("units", "")),
                     "scale": float(a.get("scale", 1.0)), "offset": float(a.get("offset", 0.0)),
                     "size": int(n), "navigate": i < data.ndim - 1})
    return hs.signals.Signal1D(data, axes=full)
