"""Save result signals as HyperSpy files, so that ``hs.load`` gives them back with their axes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from napari_corefit.io.errors import CorefitIOError, file_message

#: formats that keep every axis, metadata and dtype (HyperSpy's own)
RESULT_EXTENSIONS = (".hspy", ".zspy")


def write_results(path, signals, overwrite: bool = True) -> list[Path]:
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
    """
    path = Path(path)
    if path.suffix.lower() not in RESULT_EXTENSIONS:
        raise CorefitIOError(
            file_message(path, f"results are written as {' or '.join(RESULT_EXTENSIONS)}")
        )
    items = signals.items() if isinstance(signals, Mapping) else [("", signals)]
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
