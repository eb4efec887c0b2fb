"""The "Process spectrum image" dock widget: settings, a worker thread, progress and Cancel.

The widget only collects settings and calls the engine (:func:`napari_corefit.engine.predict`)
in a napari ``thread_worker``; the viewer stays responsive meanwhile. Layers are built only
after the engine returned, so that a cancelled or failed run leaves the viewer untouched. Every
failure is shown as a napari notification naming its cause.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from magicgui import widgets as mw
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_corefit.atoms.find import MIN_COLUMN_DISTANCE_NM
from napari_corefit.widgets._layers import (CorefitRun, add_or_replace, base_name,
                                            result_layer_data)

__all__ = ["ProcessWidget", "Job", "run_job", "device_choices"]

_MODEL_DEFAULT = "bundled default model"
_MODEL_FOLDER = "model folder"
_AS_TRAINED = "as trained (model)"


# --------------------------------------------------------------------------------------------
# what runs in the worker thread (no Qt)


@dataclass
class Job:
    """Everything one run needs; built on the GUI thread, used in the worker."""

    source: object  # SpectrumImage or hyperspy signal
    signal: object
    base: str
    adf: object = None
    model_dir: Path | None = None
    device: str = "auto"
    background_window: tuple | None = None  # None: the model's setting (SPEC default rule)
    alignment: str | None = None  # None: as trained
    smoothing: object = _AS_TRAINED  # float eV, 0 = off, or _AS_TRAINED
    atoms: bool = True
    atom_options: dict = field(default_factory=dict)
    chunk_pixels: int = 32768


@dataclass
class Outcome:
    result: object = None
    error: BaseException | None = None
    cancelled: bool = False
    seconds: float = 0.0
    store: object = None  # TemporaryDirectory holding memory-mapped DOS cubes (lazy SIs)


def load_job_model(job):
    """The model of a job, on its device (FileNotFoundError/ValueError name the problem)."""
    from napari_corefit.model.checkpoint import load_default, load_model

    if job.model_dir is None:
        return load_default(device=job.device)
    return load_model(job.model_dir, device=job.device)


def job_config(job, model):
    """The preprocessing config: the model's, with the widget's overrides.

    Raises
    ------
    ValueError
        When the overrides give model inputs of another length than the model takes.
    """
    from napari_corefit.spectra.grids import EnergyGrid
    from napari_corefit.spectra.pipeline import PreprocessConfig

    cfg = model.config if isinstance(getattr(model, "config", None), dict) else {}
    base = PreprocessConfig.from_dict(cfg.get("preprocess"))
    changes = {}
    if job.background_window is not None:
        changes["background_window"] = tuple(job.background_window)
    if job.alignment is not None and job.alignment != base.alignment:
        changes["alignment"] = job.alignment
        changes["input_grid"] = None
    if job.smoothing != _AS_TRAINED:
        changes["savgol_window_ev"] = float(job.smoothing) or None
    config = dataclasses.replace(base, **changes) if changes else base
    if "input_grid" in cfg:
        want = EnergyGrid.from_dict(cfg["input_grid"])
        got = config.grid
        if got.n != want.n or not np.isclose(got.start, want.start) or not np.isclose(
                got.step, want.step):
            raise ValueError(
                f"model mismatch: the model takes spectra on {want.to_dict()} "
                f"({base.alignment} alignment), but {config.alignment!r} alignment gives "
                f"{got.to_dict()}; keep the alignment 'as trained' or pick a model trained "
                f"for it")
    return config


def run_job(job, progress=None, cancel=None):
    """Load the model, check the settings against it and the data, run the engine.

    Never raises: the outcome carries the result, the cancellation or the error.
    """
    from napari_corefit.engine import predict
    from napari_corefit.model.inference import Cancelled

    t0 = time.perf_counter()
    store = None
    try:
        if getattr(job.signal, "_lazy", False):
            # a lazy SI may be larger than RAM and its DOS cubes larger still: memory-mapped
            # files in a temporary folder that lives as long as the run's layers
            import tempfile

            store = tempfile.TemporaryDirectory(prefix="napari-corefit-")
        model = load_job_model(job)
        config = job_config(job, model)
        result = predict(job.source, model, adf=job.adf, device=job.device, atoms=job.atoms,
                         atom_options=dict(job.atom_options), config=config,
                         chunk_pixels=job.chunk_pixels, progress=progress, cancel=cancel,
                         store=None if store is None else store.name)
    except Cancelled:
        _cleanup(store)
        return Outcome(cancelled=True, seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - every cause goes to the user as a notification
        _cleanup(store)
        return Outcome(error=exc, seconds=time.perf_counter() - t0)
    return Outcome(result=result, seconds=time.perf_counter() - t0, store=store)


def _cleanup(store):
    if store is not None:
        store.cleanup()


def device_choices():
    """(label, value) pairs of the devices torch sees here: auto, CPU and each CUDA GPU."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    auto = f"auto (CUDA: {gpus[0]})" if gpus else "auto (CPU: torch sees no CUDA GPU)"
    out = [(auto, "auto"), ("CPU", "cpu")]
    out += [(f"CUDA {i}: {name}", f"cuda:{i}") for i, name in enumerate(gpus)]
    return out


def bundled_model_present():
    from napari_corefit.model.checkpoint import CONFIG_FILE, default_model_dir

    return (default_model_dir() / CONFIG_FILE).is_file()


# --------------------------------------------------------------------------------------------
# the widget


class _Relay(QObject):
    """Carries progress reports from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(float, str)


def _is_si_layer(layer):
    return layer.metadata.get("kind") == "spectrum_image" and "signal" in layer.metadata


class ProcessWidget(QWidget):
    """Process a spectrum image: SI/ADF layers, model, device, preprocessing, atom columns.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        from napari.layers import Image

        self.viewer = napari_viewer
        self._Image = Image
        self.worker = None
        self.last_outcome = None
        self._cancel = threading.Event()
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self.progressed = self._relay.progressed  # public: tests and other widgets listen

        self.si_layer = mw.ComboBox(label="spectrum image", choices=self._si_choices,
                                    tooltip="the EELS SI layer (opened with napari-corefit)")
        self.adf_layer = mw.ComboBox(label="ADF image", choices=self._adf_choices,
                                     tooltip="image the atom columns are found in; none: the "
                                             "file's ADF, else the survey (total counts)")
        self.model_source = mw.ComboBox(label="model", choices=[_MODEL_DEFAULT, _MODEL_FOLDER])
        self.model_dir = mw.FileEdit(label="model folder", mode="d", visible=False)
        self.device = mw.ComboBox(label="device", choices=device_choices(), value="auto")
        self.auto_window = mw.CheckBox(label="", text="automatic background window", value=True,
                                       tooltip="widest part of 240-280 eV the data cover, "
                                               "ending 3 eV below the edge onset")
        self.window_lo = mw.FloatSpinBox(label="background from (eV)", value=240.0, min=0.0,
                                         max=5000.0, step=1.0, enabled=False)
        self.window_hi = mw.FloatSpinBox(label="background to (eV)", value=280.0, min=0.0,
                                         max=5000.0, step=1.0, enabled=False)
        self.alignment = mw.ComboBox(label="alignment", choices=[
            (_AS_TRAINED, None), ("first peak", "first_peak"), ("absolute energy", "absolute")])
        self.smoothing = mw.ComboBox(label="smoothing", choices=[
            (_AS_TRAINED, _AS_TRAINED), ("off", 0.0), ("Savitzky-Golay 0.5 eV", 0.5),
            ("Savitzky-Golay 0.7 eV", 0.7), ("Savitzky-Golay 1.0 eV", 1.0),
            ("Savitzky-Golay 1.5 eV", 1.5)])
        self.find_atoms = mw.CheckBox(label="", text="find atom columns", value=True)
        self.min_distance = mw.FloatSpinBox(
            label="min. column distance (nm, 0 = auto)", value=MIN_COLUMN_DISTANCE_NM, min=0.0,
            max=100.0, step=0.01,
            tooltip="columns closer than this are taken as one (default: about the probe size "
                    "of an aberration-corrected STEM); 0: from the image's periodicity")
        self.threshold_rel = mw.FloatSpinBox(label="column threshold (rel.)", value=0.2,
                                             min=0.0, max=1.0, step=0.05)
        self.sum_radius = mw.FloatSpinBox(label="sum radius (px, 0 = whole cell)", value=0.0,
                                          min=0.0, max=1000.0, step=0.5)
        self.settings = mw.Container(widgets=[
            self.si_layer, self.adf_layer, self.model_source, self.model_dir, self.device,
            self.auto_window, self.window_lo, self.window_hi, self.alignment, self.smoothing,
            self.find_atoms, self.min_distance, self.threshold_rel, self.sum_radius])
        self.auto_window.changed.connect(self._on_auto_window)
        self.model_source.changed.connect(self._on_model_source)
        self.find_atoms.changed.connect(self._on_find_atoms)

        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.request_cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.settings.native)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)

        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self._reset_choices)
        self._reset_choices()
        if not bundled_model_present():
            from napari.utils.notifications import show_warning

            self.model_source.value = _MODEL_FOLDER
            show_warning("napari-corefit: this installation has no bundled model yet; choose a "
                         "model folder (a directory with config.json and model.safetensors, "
                         "e.g. from `corefit train`) in 'Process spectrum image'")

    # ---- choices and enabling
    def _si_choices(self, _widget=None):
        layers = [ly for ly in self.viewer.layers if isinstance(ly, self._Image)]
        good = [(ly.name, ly) for ly in layers if _is_si_layer(ly)]
        other = [(f"{ly.name} (not a spectrum image)", ly) for ly in layers
                 if not _is_si_layer(ly) and ly.ndim == 3
                 and ly.metadata.get("kind") != "corefit_dos"]
        return good + other

    def _adf_choices(self, _widget=None):
        out = [("none (the file's ADF, else survey)", None)]
        out += [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, self._Image) and ly.ndim == 2
                and not str(ly.metadata.get("kind", "")).startswith("corefit")]
        return out

    def _reset_choices(self, event=None):
        self.settings.reset_choices()

    def _on_auto_window(self, value):
        self.window_lo.enabled = self.window_hi.enabled = not value

    def _on_model_source(self, value):
        self.model_dir.visible = value == _MODEL_FOLDER

    def _on_find_atoms(self, value):
        for w in (self.min_distance, self.threshold_rel, self.sum_radius):
            w.enabled = bool(value)

    # ---- building the job (GUI thread); ValueError says what is wrong
    def build_job(self):
        si = self.si_layer.value
        if si is None:
            raise ValueError("no spectrum image: open an EELS spectrum image with "
                             "napari-corefit (File > Open File(s)...) and pick its 'SI' layer")
        if not _is_si_layer(si):
            raise ValueError(f"layer {si.name!r} is not a spectrum image opened by "
                             "napari-corefit (it has no HyperSpy signal in its metadata); "
                             "pick the '<file> SI' layer the plugin's reader made")
        signal = si.metadata["signal"]
        nav_shape = tuple(a.size for a in signal.axes_manager.navigation_axes[::-1])
        if len(nav_shape) > 2:
            raise ValueError(f"layer {si.name!r}: the process widget needs a single spectrum, a "
                             f"line scan or a 2-D scan, this signal has navigation shape "
                             f"{nav_shape}")
        from napari_corefit.io import CARBON_K_EDGE_EV

        energy = np.asarray(signal.axes_manager.signal_axes[0].axis, dtype=float)
        if not energy[0] <= CARBON_K_EDGE_EV <= energy[-1]:
            raise ValueError(f"layer {si.name!r}: the energy axis covers {energy[0]:.1f}-"
                             f"{energy[-1]:.1f} eV and does not contain the carbon K edge at "
                             f"{CARBON_K_EDGE_EV:g} eV: there is no carbon K edge to predict "
                             "the DOS from")
        adf = None
        source = si.metadata.get("spectrum_image") or signal
        adf_layer = self.adf_layer.value
        if adf_layer is not None:
            img = np.asarray(adf_layer.data)
            if img.shape != nav_shape:
                raise ValueError(f"ADF layer {adf_layer.name!r} has shape {img.shape}, but the "
                                 f"spectrum image's scan is {nav_shape}: pick the image of the "
                                 "same scan, or 'none'")
            source, adf = signal, img
        model_dir = None
        if self.model_source.value == _MODEL_FOLDER:
            text = str(self.model_dir.line_edit.value).strip()
            if not text:
                raise ValueError("no model folder chosen: pick a directory with config.json and "
                                 "model.safetensors (a corefit model)")
            model_dir = Path(text).expanduser()
            if not model_dir.is_dir():
                raise ValueError(f"model folder {model_dir} does not exist")
        window = None
        if not self.auto_window.value:
            lo, hi = float(self.window_lo.value), float(self.window_hi.value)
            if not hi > lo:
                raise ValueError(f"background window {lo:g}-{hi:g} eV: the end must lie above "
                                 "the start")
            energy = signal.axes_manager.signal_axes[0].axis
            if lo < energy[0] - 1e-6 or hi > energy[-1] + 1e-6:
                raise ValueError(f"background window {lo:g}-{hi:g} eV lies outside the data "
                                 f"({energy[0]:.1f}-{energy[-1]:.1f} eV)")
            window = (lo, hi)
        opts = {"threshold_rel": float(self.threshold_rel.value),
                "sum_radius": float(self.sum_radius.value) or None}
        if self.min_distance.value and len(nav_shape) == 2:
            px_nm = _pixel_nm(signal)
            if px_nm is not None:
                opts["min_distance"] = max(2, int(round(self.min_distance.value / px_nm)))
        return Job(source=source, signal=signal, base=base_name(si.name), adf=adf,
                   model_dir=model_dir, device=self.device.value, background_window=window,
                   alignment=self.alignment.value, smoothing=self.smoothing.value,
                   atoms=bool(self.find_atoms.value) and len(nav_shape) == 2,
                   atom_options=opts, chunk_pixels=self.chunk_pixels)

    #: pixels per engine block (smaller: finer progress and faster Cancel)
    chunk_pixels = 32768

    # ---- running
    @property
    def running(self):
        return self.worker is not None

    def run(self):
        """Start a run (no-op with a message while one is running). Returns the worker."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error, show_info

        if self.running:
            show_info("napari-corefit: a run is in progress; cancel it first")
            return None
        try:
            job = self.build_job()
        except ValueError as exc:
            self.status.setText(f"error: {exc}")
            show_error(f"napari-corefit: {exc}")
            return None
        self._cancel.clear()
        self._job = job
        self.progress_bar.setValue(0)
        self.status.setText("loading the model")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker = create_worker(run_job, job, progress=self._relay.progressed.emit,
                               cancel=self._cancel.is_set, _start_thread=False)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def request_cancel(self):
        """Ask the running engine to stop at its next check (safe from any thread)."""
        if self._cancel.is_set():
            return
        self._cancel.set()
        self._relay.progressed.emit(-1.0, "cancelling")

    def _on_progress(self, fraction, message):
        if fraction < 0:
            if self.running:
                self.status.setText("cancelling...")
            return
        if self._cancel.is_set():
            return
        self.progress_bar.setValue(int(round(1000 * min(max(fraction, 0.0), 1.0))))
        self.status.setText(message)

    def _on_finished(self):
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_returned(self, outcome):
        from napari.utils.notifications import show_error, show_info, show_warning

        self.last_outcome = outcome
        if outcome.cancelled:
            self.progress_bar.setValue(0)
            self.status.setText("cancelled: no layers were added or changed")
            show_info("napari-corefit: cancelled; no layers were added or changed")
            return
        if outcome.error is not None:
            exc = outcome.error
            text = str(exc) or type(exc).__name__
            self.status.setText(f"error: {text}")
            show_error(f"napari-corefit: {type(exc).__name__}: {text}")
            return
        job = self._job
        run = CorefitRun(outcome.result, job.signal, job.base, store=outcome.store)
        try:
            data = result_layer_data(run, add_image=not self._image_shown(job))
            new = add_or_replace(self.viewer, data)
        except Exception as exc:  # noqa: BLE001
            self.status.setText(f"error while adding layers: {exc}")
            show_error(f"napari-corefit: the result could not be shown: {exc}")
            return
        names = {ly.name for ly in new}
        for ly in list(self.viewer.layers):  # the previous run's layers this run did not make
            old = ly.metadata.get("corefit_run")
            if old is not None and old is not run and old.base == run.base \
                    and ly.name not in names:
                self.viewer.layers.remove(ly)
        self.progress_bar.setValue(1000)
        q = np.asarray(outcome.result.maps["quality"].data)
        usable = int(((q & 1) == 0).sum())
        table = outcome.result.atoms_table
        atoms = "" if table is None else f", {len(table)} atom columns"
        msg = (f"{q.size} pixels, {usable} usable{atoms}, {outcome.seconds:.1f} s on "
               f"{_device_name(job.device)}")
        self.status.setText(f"done: {msg}")
        if usable == 0:
            show_warning("napari-corefit: no usable pixel: " + _reason_summary(outcome.result))
        else:
            show_info(f"napari-corefit: {msg}")
        if run.scan_shape == (1, 1):
            self._show_inspector()

    def _show_inspector(self):
        """A single spectrum has no map to click: show it and its DOS in the inspector."""
        from napari_corefit.widgets.inspector import AtomInspector

        window = getattr(self.viewer, "window", None)
        qt_window = getattr(window, "_qt_window", None)
        if window is None or qt_window is None:
            return None
        found = qt_window.findChildren(AtomInspector)
        if found:
            return found[0]
        inspector = AtomInspector(self.viewer)
        window.add_dock_widget(inspector, name="Atom inspector", area="right")
        return inspector

    def _image_shown(self, job):
        """Whether the viewer already shows the image the columns were found in."""
        if job.adf is not None:
            return True
        path = getattr(job.source, "path", None)
        for ly in self.viewer.layers:
            if isinstance(ly, self._Image) and ly.ndim == 2 and \
                    ly.metadata.get("kind") in ("adf", "survey") and path is not None and \
                    str(ly.metadata.get("path")) == str(path):
                return True
        return False

    def closeEvent(self, event):  # a closed widget leaves no engine running
        if self.running:
            self.request_cancel()
        super().closeEvent(event)

    def wait(self, timeout=60.0):
        """Block (processing Qt events) until the running worker finished (scripts, tests)."""
        from qtpy.QtWidgets import QApplication

        t0 = time.monotonic()
        while self.running and time.monotonic() - t0 < timeout:
            QApplication.processEvents()
            time.sleep(0.01)
        return not self.running


def _device_name(device):
    from napari_corefit.model.inference import resolve_device

    try:
        return str(resolve_device(device))
    except (RuntimeError, ValueError):
        return str(device)


def _pixel_nm(signal):
    """The scan's pixel size in nm (the larger of y and x), or None without length units."""
    import pint

    ureg = pint.get_application_registry()
    sizes = []
    for a in signal.axes_manager.navigation_axes:
        try:
            sizes.append(float((float(a.scale) * ureg.Quantity(1.0, str(a.units))).to("nm")
                               .magnitude))
        except Exception:  # noqa: BLE001 - pint raises several kinds for unknown units
            return None
    return max(sizes) if sizes and all(v > 0 for v in sizes) else None


def _reason_summary(result):
    from napari_corefit.spectra.masks import describe_reasons

    return describe_reasons(np.asarray(result.maps["reason"].data))
