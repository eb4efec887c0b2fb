"""Train/validation/test splits by molecule, never by site.

Sites of one molecule are strongly correlated (symmetry-equivalent or near-equivalent carbons), so
a split by site would put near-copies of test sites into training. Every split here assigns whole
molecules.

Membership is decided from a hash of each molecule's key and the seed, not from a shuffled list:
a molecule keeps its part when the database grows, so a model's test molecules stay unseen by
any later model trained with the same split settings, and ``corefit evaluate --split test`` can
recompute a checkpoint's test set on a larger database.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["Split", "SPLIT_KINDS", "key_uniform", "random_split", "extrapolation_split",
           "make_split", "split_from_dict", "subsample_train"]

#: Split designs: name -> settings (SPEC section 3, the paper's designs).
SPLIT_KINDS = {
    "random": {},
    # train on molecules with <= 20 atoms (H counted), test on 21-26 atoms
    "extrapolation": {"train_atoms": (1, 20), "test_atoms": (21, 26)},
    # the paper's variant: train on 18-20 atoms only
    "extrapolation_18_20": {"train_atoms": (18, 20), "test_atoms": (21, 26)},
}


@dataclass
class Split:
    """Molecule indices (into ``SiteTable.molecules``) of each part, and how they were chosen."""

    kind: str
    seed: int
    fractions: tuple
    train_atoms: tuple | None
    test_atoms: tuple | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    #: share of the training molecules kept (a learning curve's point; validation and test
    #: molecules are never subsampled)
    train_fraction: float = 1.0

    def settings(self) -> dict:
        """JSON-able description from which :func:`split_from_dict` rebuilds the split."""
        d = asdict(self)
        for k in ("train", "val", "test"):
            d.pop(k)
        d["sizes"] = {k: int(len(getattr(self, k))) for k in ("train", "val", "test")}
        return d

    def site_mask(self, part, site_molecule) -> np.ndarray:
        """Boolean mask over sites whose molecule is in ``part`` ("train", "val" or "test")."""
        return np.isin(np.asarray(site_molecule), getattr(self, part))


def key_uniform(keys, seed=0) -> np.ndarray:
    """A number in [0, 1) per key, fixed by the key and the seed (sha256).

    Examples
    --------
    >>> u = key_uniform(["qm9:000001", "qm9:000002"], seed=0)
    >>> bool(((u >= 0) & (u < 1)).all())
    True
    >>> bool((u == key_uniform(["qm9:000001", "qm9:000002"], seed=0)).all())
    True
    """
    out = np.empty(len(keys))
    for i, k in enumerate(keys):
        h = hashlib.sha256(f"{int(seed)}:{k}".encode()).digest()
        out[i] = int.from_bytes(h[:8], "little") / 2.0 ** 64
    return out


def _parts(u, fractions):
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    edges = np.cumsum(f / f.sum())
    return u < edges[0], (u >= edges[0]) & (u < edges[1]), u >= edges[1]


def random_split(keys, seed=0, fractions=(0.8, 0.1, 0.1), eligible=None) -> Split:
    """Random split of molecules into train/val/test (default 8:1:1, the paper's 9:1 with a
    validation tenth taken from training).

    Parameters
    ----------
    keys : sequence of str
        Molecule keys (``SiteTable.molecules["key"]``).
    seed : int
    fractions : (float, float, float)
    eligible : bool array, optional
        Molecules that may be used at all (e.g. those with a usable site).

    Returns
    -------
    Split
    """
    keys = [str(k) for k in keys]
    u = key_uniform(keys, seed)
    ok = np.ones(len(keys), bool) if eligible is None else np.asarray(eligible, bool)
    tr, va, te = _parts(u, fractions)
    idx = np.arange(len(keys))
    return Split("random", int(seed), tuple(float(x) for x in fractions), None, None,
                 idx[tr & ok], idx[va & ok], idx[te & ok])


def extrapolation_split(keys, n_atoms, train_atoms=(1, 20), test_atoms=(21, 26), seed=0,
                        val_fraction=0.1, eligible=None, kind="extrapolation") -> Split:
    """The paper's extrapolation design: train on small molecules, test on larger ones.

    Molecules with ``train_atoms[0] <= n_atoms <= train_atoms[1]`` (H counted) are split into
    train and validation (``val_fraction``); those within ``test_atoms`` are the test set; the
    rest are unused.
    """
    keys = [str(k) for k in keys]
    n_atoms = np.asarray(n_atoms)
    ok = np.ones(len(keys), bool) if eligible is None else np.asarray(eligible, bool)
    in_train = (n_atoms >= train_atoms[0]) & (n_atoms <= train_atoms[1]) & ok
    in_test = (n_atoms >= test_atoms[0]) & (n_atoms <= test_atoms[1]) & ok
    if (in_train & in_test).any():
        raise ValueError(f"train atoms {train_atoms} and test atoms {test_atoms} overlap")
    u = key_uniform(keys, seed)
    idx = np.arange(len(keys))
    val = in_train & (u < val_fraction)
    return Split(kind, int(seed), (1.0 - val_fraction, val_fraction, 0.0),
                 tuple(int(a) for a in train_atoms), tuple(int(a) for a in test_atoms),
                 idx[in_train & ~val], idx[val], idx[in_test])


def make_split(kind, keys, n_atoms=None, seed=0, eligible=None, **kwargs) -> Split:
    """Build a split by name (one of :data:`SPLIT_KINDS`)."""
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split {kind!r}; known: {sorted(SPLIT_KINDS)}")
    if kind == "random":
        return random_split(keys, seed=seed, eligible=eligible, **kwargs)
    settings = {**SPLIT_KINDS[kind], **kwargs}
    if n_atoms is None:
        raise ValueError(f"split {kind!r} needs the molecules' atom counts")
    return extrapolation_split(keys, n_atoms, seed=seed, eligible=eligible, kind=kind,
                               **settings)


def subsample_train(split, keys, fraction) -> Split:
    """The same split with only ``fraction`` of its training molecules (chosen by a hash of the
    key with a seed of its own, so the smaller training sets are nested: 1/4 is inside 1/2).
    """
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise ValueError(f"training fraction must be in (0, 1], got {fraction}")
    u = key_uniform([str(keys[i]) for i in split.train], seed=split.seed + _SUBSAMPLE_SEED)
    return replace(split, train=split.train[u < fraction],
                   train_fraction=split.train_fraction * fraction)


#: offset of the subsampling hash's seed from the split's, so that it is independent of the parts
_SUBSAMPLE_SEED = 7919


def split_from_dict(settings, keys, n_atoms=None, eligible=None) -> Split:
    """Rebuild a split from :meth:`Split.settings` on a (possibly larger) database."""
    sp = _split_from_dict(settings, keys, n_atoms, eligible)
    fraction = settings.get("train_fraction", 1.0)
    return sp if fraction == 1.0 else subsample_train(sp, keys, fraction)


def _split_from_dict(settings, keys, n_atoms, eligible):
    kind = settings["kind"]
    if kind == "random":
        return random_split(keys, seed=settings["seed"], fractions=settings["fractions"],
                            eligible=eligible)
    return extrapolation_split(keys, n_atoms, train_atoms=tuple(settings["train_atoms"]),
                               test_atoms=tuple(settings["test_atoms"]), seed=settings["seed"],
                               val_fraction=settings["fractions"][1], eligible=eligible,
                               kind=kind)
