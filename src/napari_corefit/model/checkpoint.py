"""Model checkpoints: safetensors weights + a JSON config, never a pickle (SPEC section 5).

A checkpoint is a directory with two files:

``model.safetensors``
    Every member's parameters under ``member{i}.{name}``, and the out-of-distribution (OOD) model
    of the training inputs under ``ood.mean``, ``ood.components``, ``ood.variance``.
``config.json``
    What is needed to use the weights correctly (architecture, input and output grids, the
    preprocessing and peak-detector settings the inputs were aligned with, the noise level) and
    where they came from (database fingerprint and recipe, git commit, training settings, test
    metrics).

Loading checks the format version, the architecture against the stored tensor shapes, and the
grids against what the caller expects, and says which of these is wrong.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from napari_corefit.model.network import Ensemble, build_network
from napari_corefit.spectra.grids import EnergyGrid

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LoadedModel",
    "save_model",
    "load_model",
    "load_default",
    "default_model_dir",
    "fit_ood",
    "database_fingerprint",
    "git_commit",
    "resolve_device",
    "update_config",
]

FORMAT = "napari-corefit-model"
#: 2: int8 weights with per-row scales (``weights_dtype`` int8); version 1 files still load
FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_OOD_KEYS = ("mean", "components", "variance")


@dataclass
class LoadedModel:
    """A checkpoint in memory.

    Attributes
    ----------
    ensemble : Ensemble
        In eval mode, on the requested device.
    config : dict
        The checkpoint's JSON config (see module docstring).
    ood : dict
        ``mean`` (n_in,), ``components`` (k, n_in), ``variance`` (k,) as float32 numpy arrays and
        ``threshold`` (float), or empty when the checkpoint has no OOD model.
    directory : Path
    device : torch.device
    """

    ensemble: Ensemble
    config: dict
    ood: dict = field(default_factory=dict)
    directory: Path | None = None
    device: torch.device = torch.device("cpu")

    @property
    def input_grid(self) -> EnergyGrid:
        return EnergyGrid.from_dict(self.config["input_grid"])

    @property
    def output_grid(self) -> EnergyGrid:
        return EnergyGrid.from_dict(self.config["output_grid"])

    @property
    def n_members(self) -> int:
        return len(self.ensemble.members)

    @property
    def sigma_scale(self) -> np.ndarray:
        """Factor (occupied, unoccupied) applied to the ensemble spread, shape (2,).

        Fitted on the validation molecules (``corefit calibrate``, run by ``corefit train``) so
        that ±2σ holds the nominal share of the truth; ones for an uncalibrated checkpoint.
        """
        scale = (self.config.get("uncertainty") or {}).get("sigma_scale")
        if not scale:
            return np.ones(2, dtype=np.float32)
        return np.array([scale["occupied"], scale["unoccupied"]], dtype=np.float32)

    @property
    def high_sigma_threshold(self) -> float | None:
        """``sigma_rel`` above which the engine flags a prediction as uncertain by default: the
        95th percentile of the calibrated relative spread on the validation molecules (None for
        an uncalibrated checkpoint)."""
        t = (self.config.get("uncertainty") or {}).get("high_sigma_threshold")
        return None if t is None else float(t)

    def ood_score(self, spectra) -> np.ndarray:
        """Reconstruction error of spectra by the training inputs' PCA, over its threshold.

        Parameters
        ----------
        spectra : array_like, shape (..., n_in)
            Preprocessed spectra on the input grid.

        Returns
        -------
        ndarray, shape (...)
            1.0 is the threshold (99th percentile of the training inputs); larger values are less
            like anything the model was trained on. NaN when the checkpoint has no OOD model.
        """
        x = np.asarray(spectra, dtype=np.float32)
        if not self.ood:
            return np.full(x.shape[:-1], np.nan, dtype=np.float32)
        return ood_error(x, self.ood) / np.float32(self.ood["threshold"])


def fit_ood(inputs, n_components=16, quantile=0.99):
    """PCA model of the training inputs for out-of-distribution flags.

    The error of a spectrum is the mean squared residual after projecting it onto the top
    ``n_components`` principal components; the threshold is the ``quantile`` of the training
    inputs' own errors.

    Parameters
    ----------
    inputs : array_like, shape (m, n_in)
    n_components : int
    quantile : float

    Returns
    -------
    dict
        ``mean``, ``components``, ``variance`` (float32 arrays), ``threshold``, ``quantile``,
        ``n_fit``.
    """
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"fit_ood needs at least 2 input rows, got shape {x.shape}")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = int(min(n_components, vt.shape[0]))
    ood = {
        "mean": mean.astype(np.float32),
        "components": vt[:k].astype(np.float32),
        "variance": (s[:k] ** 2 / (x.shape[0] - 1)).astype(np.float32),
    }
    err = ood_error(x.astype(np.float32), ood)
    ood.update(threshold=float(max(np.quantile(err, quantile), 1e-12)),
               quantile=float(quantile), n_fit=int(x.shape[0]))
    return ood


def ood_error(spectra, ood) -> np.ndarray:
    """Mean squared PCA reconstruction residual of each spectrum, shape (...)."""
    x = np.asarray(spectra, dtype=np.float32) - ood["mean"]
    c = ood["components"]
    resid = x - (x @ c.T) @ c
    return (resid * resid).mean(-1)


def database_fingerprint(db_dir, n_sites=None) -> dict:
    """Hash of a database directory's shard files (names and bytes) and its site count."""
    db_dir = Path(db_dir)
    shards = [db_dir] if db_dir.is_file() else sorted(p for p in db_dir.glob("*.h5")
                                                       if p.is_file())
    h = hashlib.sha256()
    for p in shards:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return {"sha256": h.hexdigest(), "shards": [p.name for p in shards],
            "n_sites": None if n_sites is None else int(n_sites)}


def git_commit(path=None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``path`` (this package by default)."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _jsonable(obj):
    # numpy scalars and arrays (metrics, settings) into plain JSON types
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, EnergyGrid):
        return obj.to_dict()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "int8": torch.int8}
#: suffix of the per-row scale stored beside each int8 weight matrix
_SCALE = ".scale"


def _quantize_int8(t):
    """Symmetric int8 per output row (the first axis): ``t ~ q * scale[:, None, ...]``.

    Each row of a weight matrix feeds one output unit; a scale per row keeps small rows as
    precise as large ones (about 0.4 % of the row's largest weight at worst).
    """
    rows = t.reshape(t.shape[0], -1)
    scale = rows.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(t.shape), scale.to(torch.float32)


def _dequantize(state: dict) -> dict:
    """Float32 tensors from a member's stored tensors (int8 matrices with their row scales)."""
    out = {}
    for name, t in state.items():
        if name.endswith(_SCALE):
            continue
        scale = state.get(name + _SCALE)
        if t.dtype == torch.int8 and scale is not None:
            t = t.to(torch.float32) * scale.reshape((-1,) + (1,) * (t.dim() - 1))
        out[name] = t
    return out


def save_model(directory, ensemble: Ensemble, config: dict, ood: dict | None = None,
               weights_dtype: str = "float32") -> Path:
    """Write an ensemble and its config as a checkpoint directory.

    Parameters
    ----------
    directory : path
        Created if needed; ``model.safetensors`` and ``config.json`` in it are overwritten.
    ensemble : Ensemble
    config : dict
        At least ``arch`` (the dict :func:`build_network` takes), ``input_grid`` and
        ``output_grid`` (EnergyGrid or its dict). Usually also ``preprocess``, ``peak``,
        ``noise_counts``, ``level``, ``database``, ``recipe``, ``training``, ``metrics``.
        ``format``, ``format_version``, ``n_members`` are set here; ``commit`` is filled from
        git when absent.
    ood : dict, optional
        From :func:`fit_ood`; its arrays go into the safetensors file, its scalars into the
        config's ``ood`` block.
    weights_dtype : {"float32", "float16", "bfloat16", "int8"}
        Storage type of the floating-point weights, for bundled models: 16-bit types halve the
        file; ``int8`` quarters it, storing each weight matrix (2-D or more) as int8 with one
        float32 scale per output row (biases stay float32). All are cast back to the network's
        float32 on loading. Only ``float32`` round-trips exactly.

    Returns
    -------
    Path
        The checkpoint directory.
    """
    directory = Path(directory)
    for key in ("arch", "input_grid", "output_grid"):
        if key not in config:
            raise ValueError(f"a model config needs {key!r}")
    cfg = _jsonable(dict(config))
    if weights_dtype not in _DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(_DTYPES)}, got {weights_dtype!r}")
    cfg.update(format=FORMAT, format_version=FORMAT_VERSION, n_members=len(ensemble.members),
               weights_dtype=weights_dtype)
    if "commit" not in cfg:
        cfg["commit"] = git_commit()
    tensors = {}
    for i, member in enumerate(ensemble.members):
        for name, t in member.state_dict().items():
            t = t.detach().to("cpu")
            if t.is_floating_point() and weights_dtype == "int8":
                if t.dim() >= 2:
                    t, scale = _quantize_int8(t.float())
                    tensors[f"member{i}.{name}{_SCALE}"] = scale.contiguous()
                else:
                    t = t.float()
            elif t.is_floating_point():
                t = t.to(_DTYPES[weights_dtype])
            tensors[f"member{i}.{name}"] = t.contiguous()
    if ood:
        for k in _OOD_KEYS:
            tensors[f"ood.{k}"] = torch.from_numpy(np.ascontiguousarray(ood[k], np.float32))
        cfg["ood"] = {k: _jsonable(v) for k, v in ood.items() if k not in _OOD_KEYS}
    else:
        cfg["ood"] = None
    directory.mkdir(parents=True, exist_ok=True)
    # write under temporary names and rename, so an interrupted save never leaves a torn pair
    tmp_w, tmp_c = directory / (WEIGHTS_FILE + ".tmp"), directory / (CONFIG_FILE + ".tmp")
    save_file(tensors, str(tmp_w),
              metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    tmp_c.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tmp_w.replace(directory / WEIGHTS_FILE)
    tmp_c.replace(directory / CONFIG_FILE)
    return directory


def update_config(directory, changes: dict) -> dict:
    """Replace top-level entries of a checkpoint's config.json, leaving its weights alone.

    For what is learnt after training (a calibration, test metrics). Written under a temporary
    name and renamed, like :func:`save_model`. Returns the new config.
    """
    path = Path(directory) / CONFIG_FILE
    cfg = json.loads(path.read_text())
    cfg.update(_jsonable(dict(changes)))
    tmp = path.with_name(CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return cfg


def _check_grid(cfg, key, expected, directory):
    if expected is None:
        return
    expected = expected if isinstance(expected, EnergyGrid) else EnergyGrid.from_dict(expected)
    got = EnergyGrid.from_dict(cfg[key])
    if not (got.n == expected.n and np.isclose(got.start, expected.start)
            and np.isclose(got.step, expected.step)):
        raise ValueError(f"model {directory}: {key} is {got.to_dict()}, expected "
                         f"{expected.to_dict()}; this model was trained for other grids")


def resolve_device(device="auto") -> torch.device:
    """The torch device for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    RuntimeError
        ``"cuda"`` asked for on a machine where torch sees no CUDA GPU.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    device = "auto" if device is None else str(device).lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA GPU "
                           "(torch.cuda.is_available() is False); use device 'auto' or 'cpu'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
    return torch.device(device)


def load_model(directory, device="cpu", input_grid=None, output_grid=None) -> LoadedModel:
    """Load a checkpoint written by :func:`save_model`.

    Parameters
    ----------
    directory : path
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when available).
    input_grid, output_grid : EnergyGrid or dict, optional
        When given, the checkpoint's grids must equal them (else ValueError).

    Returns
    -------
    LoadedModel

    Raises
    ------
    FileNotFoundError
        The directory or one of its two files is missing.
    ValueError
        Not a corefit model, a newer format version, an unknown architecture, weights whose
        names or shapes do not fit the architecture, or grids that do not match.
    """
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"model {directory}: missing {p.name} (a corefit model "
                                    f"directory holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"model {directory}: {CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"model {directory}: {CONFIG_FILE} is not a {FORMAT} config")
    version = cfg.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ValueError(f"model {directory}: format version {version!r}; this napari-corefit "
                         f"reads versions 1..{FORMAT_VERSION} (upgrade napari-corefit?)")
    for key in ("arch", "input_grid", "output_grid", "n_members"):
        if key not in cfg:
            raise ValueError(f"model {directory}: {CONFIG_FILE} lacks {key!r}")
    _check_grid(cfg, "input_grid", input_grid, directory)
    _check_grid(cfg, "output_grid", output_grid, directory)
    arch = cfg["arch"]
    n_in, n_out = cfg["input_grid"]["n"], cfg["output_grid"]["n"]
    if arch.get("n_in", n_in) != n_in or arch.get("n_out", n_out) != n_out:
        raise ValueError(f"model {directory}: architecture maps {arch.get('n_in')} -> "
                         f"{arch.get('n_out')} points but the grids have {n_in} -> {n_out}")
    try:
        tensors = load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"model {directory}: cannot read {WEIGHTS_FILE} ({exc})") from None
    dev = resolve_device(device)
    members = []
    for i in range(int(cfg["n_members"])):
        net = build_network(arch)
        prefix = f"member{i}."
        state = _dequantize({k[len(prefix):]: v for k, v in tensors.items()
                             if k.startswith(prefix)})
        if not state:
            raise ValueError(f"model {directory}: config says {cfg['n_members']} members but "
                             f"{WEIGHTS_FILE} has no weights for member {i}")
        expected = net.state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
               if k in state and state[k].shape != v.shape]
        if missing or extra or bad:
            raise ValueError(f"model {directory}: weights of member {i} do not fit architecture "
                             f"{arch.get('name')!r}: missing {missing[:3]}, unexpected "
                             f"{extra[:3]}, shape mismatch {bad[:3]}")
        net.load_state_dict(state, strict=True)
        members.append(net)
    ensemble = Ensemble(members).to(dev).eval()
    ood = {}
    if all(f"ood.{k}" in tensors for k in _OOD_KEYS) and cfg.get("ood"):
        ood = {k: tensors[f"ood.{k}"].numpy() for k in _OOD_KEYS}
        ood.update(cfg["ood"])
    return LoadedModel(ensemble=ensemble, config=cfg, ood=ood, directory=directory, device=dev)


def default_model_dir(level="site") -> Path:
    """Directory of the bundled model (package data ``napari_corefit/model/weights/default``).

    ``level="molecule"`` gives ``weights/default_molecule``.
    """
    name = "default" if level == "site" else f"default_{level}"
    return Path(str(resources.files("napari_corefit.model").joinpath("weights", name)))


def load_default(device="cpu", level="site", **kwargs) -> LoadedModel:
    """Load the model bundled with the package (the engine's default).

    Raises
    ------
    FileNotFoundError
        When this installation has no bundled model of that level.
    """
    d = default_model_dir(level)
    if not (d / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"no bundled {level}-level model in this installation ({d}); "
                                "train one with `corefit train` and pass it with --model")
    return load_model(d, device=device, **kwargs)
