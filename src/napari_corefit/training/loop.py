"""Training loop: Adam, MSE, early stopping on the validation rows, an ensemble of seeds.

Defaults follow the paper (Adam, learning rate 1e-4, MSE, early stopping). Each ensemble member
gets its own seed for its weights, its batch order and its noise draws; the spread of the
members is the per-energy uncertainty the engine shows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from napari_corefit.model.checkpoint import resolve_device
from napari_corefit.model.network import Ensemble, build_network
from napari_corefit.training.dataset import CurveSet, make_inputs
from napari_corefit.training.noise import NoiseModel

__all__ = ["TrainSettings", "resolve_device", "train_member", "train_ensemble", "predict"]

#: Validation noise draws use this seed, so that every member and epoch is judged on the same data.
VALIDATION_SEED = 20230615


@dataclass
class TrainSettings:
    """Optimisation settings (stored in the checkpoint's ``training`` block)."""

    epochs: int = 3000
    lr: float = 1e-4
    batch_size: int = 256
    #: stop when the validation loss has not improved for this many epochs
    patience: int = 100
    weight_decay: float = 0.0
    #: multiply the learning rate by this when the validation loss has not improved for
    #: ``lr_patience`` epochs (1.0: constant rate), down to ``min_lr``
    lr_decay: float = 1.0
    lr_patience: int = 30
    min_lr: float = 1e-5
    #: ``"constant"`` (``lr``, or halved on plateaus with ``lr_decay`` < 1) or ``"cosine"``:
    #: from ``lr`` down to ``min_lr`` along half a cosine period over ``epochs``, stepped every
    #: epoch; ``epochs`` then sets the training's length, early stopping still applies
    lr_schedule: str = "constant"
    #: weight of the mean (1 - cosine similarity) of each channel added to the MSE loss
    #: (0: the paper's plain MSE); the MSE of area-normalised curves is ~1e-3, 1 - cos ~0.05
    cosine_weight: float = 0.0
    seed: int = 0
    device: str = "auto"
    #: draw fresh noisy inputs every this many epochs (noise training only)
    renoise_every: int = 1
    #: stop a member after this many seconds (None: no limit); recorded as ``stopped: "time"``.
    #: CPU seconds of the training process on a CPU device, so that a machine busy with other
    #: work does not cut a member short (session 21: a 40-minute wall-clock limit stopped two
    #: members after 285 epochs while a build took half their cores); wall seconds on a GPU
    max_seconds: float | None = None
    #: torch CPU threads (None: torch's default). One thread is several times faster for these
    #: small networks on a machine whose cores are busy with other work.
    threads: int | None = None
    #: arithmetic of the training forward and backward passes: ``"float32"``, or
    #: ``"bfloat16"`` (autocast: matrix products in bfloat16, weights, optimiser and loss in
    #: float32; about 2x faster on CPUs with AVX-512 BF16, docs/model_experiments.md).
    #: Validation, early stopping and the saved weights are float32 either way.
    precision: str = "float32"
    #: validate, keep and return an exponential moving average of the weights, updated after
    #: every optimiser step with this decay (0: off, the weights of the last step as they are).
    #: 0.999 averages over the last ~1,000 steps (~10 epochs at 25 k sites): the average sits
    #: nearer the middle of the minimum the noisy steps circle in (docs/model_experiments.md).
    ema_decay: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        # options added later are left out at their off value, so that members saved before
        # they existed keep their keys (and are reused, not trained again)
        if not d["ema_decay"]:
            del d["ema_decay"]
        if d["lr_schedule"] == "constant":
            del d["lr_schedule"]
        return d


@torch.no_grad()
def predict(net, inputs, device, batch_size=4096) -> np.ndarray:
    """Outputs of a network or ensemble for numpy inputs, as a float32 numpy array."""
    net.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(inputs[i:i + batch_size])).to(device)
        out.append(net(x).float().cpu().numpy())
    if not out:
        return np.zeros((0,), np.float32)
    # ensembles stack members first: (M, B, 2, n) -> concatenate along the batch axis
    axis = 1 if isinstance(net, Ensemble) else 0
    return np.concatenate(out, axis=axis)


def _val_loss(net, x, y, device, batch_size=4096):
    p = predict(net, x, device, batch_size)
    return float(((p - y) ** 2).mean())


def _loss(pred, target, cosine_weight=0.0):
    loss = torch.nn.functional.mse_loss(pred, target)
    if cosine_weight:
        cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1, eps=1e-8)
        loss = loss + cosine_weight * (1.0 - cos).mean()
    return loss


def train_member(arch, train: CurveSet, val: CurveSet, settings: TrainSettings, seed=None,
                 noise: NoiseModel | None = None, preprocess_config=None, progress=True,
                 desc="train"):
    """Train one network with early stopping; return it (best validation epoch) and its history.

    Parameters
    ----------
    arch : dict
        For :func:`~napari_corefit.model.network.build_network`.
    train, val : CurveSet
    settings : TrainSettings
    seed : int, optional
        Default ``settings.seed``.
    noise : NoiseModel, optional
        Train on fresh noisy draws (validation on one fixed draw).
    preprocess_config : PreprocessConfig, optional
    progress : bool
        A tqdm bar on stderr.
    desc : str

    Returns
    -------
    net : torch.nn.Module
        In eval mode, on the training device, with the weights of the best validation epoch.
    history : dict
        ``train_loss``, ``val_loss``, ``lr`` (per epoch), ``best_epoch``, ``best_val_loss``,
        ``epochs_run``, ``seconds``, ``stopped`` (``"early"``: patience ran out; ``"epochs"``;
        ``"time"``: ``max_seconds`` ran out).
    """
    if len(train) == 0:
        raise ValueError("no training rows")
    if len(val) == 0:
        raise ValueError("no validation rows")
    seed = settings.seed if seed is None else int(seed)
    if settings.precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got "
                         f"{settings.precision!r}")
    autocast_bf16 = settings.precision == "bfloat16"
    device = resolve_device(settings.device)
    if settings.threads and device.type == "cpu":
        torch.set_num_threads(int(settings.threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(arch).to(device)
    if not 0.0 <= settings.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {settings.ema_decay!r}")
    ema = None
    if settings.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings.ema_decay))
    judged = net if ema is None else ema.module
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = None
    if settings.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got "
                         f"{settings.lr_schedule!r}")
    if settings.lr_schedule == "cosine":
        if settings.lr_decay < 1.0:
            raise ValueError("lr_decay (plateau halving) and the cosine schedule exclude "
                             "each other")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, settings.epochs), eta_min=settings.min_lr)
    elif settings.lr_decay < 1.0:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=settings.lr_decay, patience=settings.lr_patience,
            min_lr=settings.min_lr)
    noisy = noise is not None and noise.noisy

    x_val, ok_val = make_inputs(val, noise, preprocess_config,
                                np.random.default_rng(VALIDATION_SEED))
    y_val = val.targets[ok_val]
    x_val = x_val[ok_val]
    y_train = torch.from_numpy(train.targets).to(device)
    x_np, ok = make_inputs(train, noise, preprocess_config, rng)
    x_train = torch.from_numpy(np.ascontiguousarray(x_np)).to(device)

    hist = {"train_loss": [], "val_loss": [], "lr": []}
    best, best_state, best_epoch, t0 = np.inf, None, -1, time.perf_counter()
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    c0 = clock()
    stopped = "epochs"
    bar = tqdm(range(settings.epochs), desc=desc, file=sys.stderr, disable=not progress,
               leave=False, dynamic_ncols=True)
    for epoch in bar:
        if noisy and epoch > 0 and epoch % max(1, settings.renoise_every) == 0:
            x_np, ok = make_inputs(train, noise, preprocess_config, rng)
            x_train = torch.from_numpy(np.ascontiguousarray(x_np)).to(device)
        rows = np.flatnonzero(ok)
        rng.shuffle(rows)
        net.train()
        total, n = 0.0, 0
        for i in range(0, rows.size, settings.batch_size):
            idx = torch.from_numpy(rows[i:i + settings.batch_size]).to(device)
            xb, yb = x_train[idx], y_train[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                pred = net(xb)
            loss = _loss(pred.float(), yb, settings.cosine_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        hist["train_loss"].append(total / max(n, 1))
        vl = _val_loss(judged, x_val, y_val, device)
        hist["val_loss"].append(vl)
        hist["lr"].append(opt.param_groups[0]["lr"])
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(vl)
        elif sched is not None:
            sched.step()
        if vl < best:
            best, best_epoch = vl, epoch
            best_state = copy.deepcopy(judged.state_dict())
        bar.set_postfix(train=f"{hist['train_loss'][-1]:.3g}", val=f"{vl:.3g}", best=best_epoch,
                        refresh=False)
        if epoch - best_epoch >= settings.patience:
            stopped = "early"
            break
        if settings.max_seconds is not None and clock() - c0 > settings.max_seconds:
            stopped = "time"
            break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    hist.update(best_epoch=int(best_epoch), best_val_loss=float(best),
                epochs_run=len(hist["val_loss"]), seconds=time.perf_counter() - t0,
                stopped=stopped)
    return net, hist


def _member_key(arch, train, val, settings, seed, noise, preprocess_config) -> dict:
    """What a saved member was trained from: it is reused only if all of it matches."""
    # how it ran (device, threads) is not what it was trained from: a member trained on a GPU
    # is reused by a run on the CPU
    what = {k: v for k, v in settings.to_dict().items() if k not in ("device", "threads")}
    return {"arch": dict(arch), "settings": {**what, "seed": int(seed)},
            "noise": None if noise is None else noise.to_dict(),
            "preprocess": None if preprocess_config is None else preprocess_config.to_dict(),
            "n_train": len(train), "n_val": len(val),
            # a cheap fingerprint of the rows: same counts from other molecules must not match
            "train_sum": float(np.asarray(train.targets, np.float64).sum()),
            "val_sum": float(np.asarray(val.targets, np.float64).sum())}


def _member_name(key) -> str:
    # named by what it was trained from, so that models sharing a directory share members
    # (a study's architecture comparison and its default ensemble train the same first seeds)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"member-{digest}"


def _load_member(member_dir, key, arch):
    name = _member_name(key)
    meta = Path(member_dir) / f"{name}.json"
    if not meta.is_file():
        return None
    saved = json.loads(meta.read_text())
    if saved.get("key") != json.loads(json.dumps(key)):
        return None
    net = build_network(arch)
    net.load_state_dict(load_file(str(Path(member_dir) / f"{name}.safetensors")))
    return net.eval(), saved["history"]


def _save_member(member_dir, key, net, hist):
    member_dir, name = Path(member_dir), _member_name(key)
    member_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
              str(member_dir / f"{name}.safetensors"))
    # the JSON last: a member counts as saved only once its weights are complete
    tmp = member_dir / f"{name}.json.tmp"
    tmp.write_text(json.dumps({"key": key, "history": hist}))
    tmp.replace(member_dir / f"{name}.json")


def train_ensemble(arch, train: CurveSet, val: CurveSet, settings: TrainSettings, n_members=5,
                   noise=None, preprocess_config=None, progress=True, member_dir=None,
                   only=None):
    """Train ``n_members`` networks (seeds ``settings.seed + i``); return (Ensemble, histories).

    With ``member_dir``, each finished member is saved there, and a member already saved from
    the same architecture, settings, seed, noise and rows is loaded instead of trained again:
    an interrupted ensemble resumes at the member it was training, and ensembles that share a
    ``member_dir`` share their common members. With ``only`` (member indices), just those
    members are trained into ``member_dir`` and ``(None, None)`` is returned: separate
    processes can train one ensemble's members side by side, and the ensemble is then
    assembled from ``member_dir`` without training.
    """
    if n_members < 1:
        raise ValueError(f"an ensemble needs at least one member, got {n_members}")
    if only is not None:
        if member_dir is None:
            raise ValueError("training only some members needs a member_dir to keep them in")
        bad = [i for i in only if not 0 <= i < n_members]
        if bad:
            raise ValueError(f"member indices {bad} outside 0..{n_members - 1}")
    members, histories = [], []
    for i in range(n_members):
        if only is not None and i not in only:
            continue
        seed = settings.seed + i
        key = _member_key(arch, train, val, settings, seed, noise, preprocess_config)
        found = None if member_dir is None else _load_member(member_dir, key, arch)
        if found is not None:
            net, hist = found
            if progress:
                print(f"member {i + 1}/{n_members}: reused from {member_dir}", file=sys.stderr)
        else:
            net, hist = train_member(arch, train, val, settings, seed=seed, noise=noise,
                                     preprocess_config=preprocess_config, progress=progress,
                                     desc=f"member {i + 1}/{n_members}")
            if member_dir is not None:
                _save_member(member_dir, key, net, hist)
        if progress:
            print(f"member {i + 1}/{n_members}: best validation MSE {hist['best_val_loss']:.4g} "
                  f"at epoch {hist['best_epoch'] + 1} of {hist['epochs_run']} "
                  f"({hist['seconds']:.0f} s)", file=sys.stderr)
        members.append(net.cpu())
        histories.append(hist)
    if only is not None:
        return None, None
    return Ensemble(members).eval(), histories
