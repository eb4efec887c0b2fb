"""Score an engine result against a sample's ground truth: atoms found, per-atom DOS similarity."""

from __future__ import annotations

import numpy as np

__all__ = ["match_atoms", "cosine", "score_result"]


def match_atoms(true_yx, found_yx, tol):
    """One-to-one matching of found to true positions within ``tol`` (same units).

    Pairs are taken closest first (greedy), so two found columns never share one atom.

    Returns
    -------
    pairs : ndarray (n_pairs, 2) of int
        Rows ``(true index, found index)``.

    Examples
    --------
    >>> match_atoms([[0, 0], [5, 5]], [[0.2, 0], [0.1, 0.1], [9, 9]], tol=1.0).tolist()
    [[0, 1]]
    """
    t = np.asarray(true_yx, dtype=np.float64).reshape(-1, 2)
    f = np.asarray(found_yx, dtype=np.float64).reshape(-1, 2)
    if not len(t) or not len(f):
        return np.zeros((0, 2), np.int64)
    d = np.hypot(t[:, None, 0] - f[None, :, 0], t[:, None, 1] - f[None, :, 1])
    ti, fi = np.nonzero(d <= tol)
    order = np.argsort(d[ti, fi], kind="stable")
    used_t, used_f, pairs = set(), set(), []
    for k in order:
        if ti[k] not in used_t and fi[k] not in used_f:
            used_t.add(ti[k])
            used_f.add(fi[k])
            pairs.append((ti[k], fi[k]))
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


def cosine(a, b):
    """Cosine similarity of the last axis (NaN where either vector is zero or NaN)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(-1)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def score_result(truth, result, tol_nm=0.05):
    """Compare an :class:`~napari_corefit.engine.EngineResult` (``atoms=True``) with the truth.

    Parameters
    ----------
    truth : dict
        From :func:`napari_corefit.sample_data.read_truth`.
    result : EngineResult
    tol_nm : float
        A found column within this distance of a heavy atom finds it (0.05 nm: under half the
        shortest bond, 0.116 nm in C#N).

    Returns
    -------
    dict
        ``n_true`` (heavy atoms: H is below the ADF threshold and carries no carbon edge),
        ``n_found``, ``recall``, ``precision``, ``position_error_nm`` (median over matches),
        ``n_carbon``, ``n_carbon_scored`` (matched carbons the engine did not mask),
        ``cosine_occupied`` / ``cosine_unoccupied`` (per scored carbon, arrays),
        ``median_cosine_occupied`` / ``median_cosine_unoccupied``,
        ``edge_counts_median`` (the engine's N of the matched carbon columns),
        ``inside_2sigma`` (per scored carbon: share of the true DOS points, both curves,
        inside the predicted mean +- 2 sigma; NaN without an ensemble spread).
    """
    table = result.atoms_table
    heavy = np.flatnonzero(np.asarray(truth["z"]) > 1)
    true_yx = np.c_[truth["y_nm"][heavy], truth["x_nm"][heavy]]
    found_yx = np.c_[table["y_nm"], table["x_nm"]] if table is not None else np.zeros((0, 2))
    pairs = match_atoms(true_yx, found_yx, tol_nm)
    n_true, n_found = len(heavy), len(found_yx)
    err = np.hypot(*(true_yx[pairs[:, 0]] - found_yx[pairs[:, 1]]).T) if len(pairs) else []

    carbon_rows = {int(a): k for k, a in enumerate(truth["carbon"])}
    cos_o, cos_u, edge, inside = [], [], [], []
    atoms_std = getattr(result, "atoms_std", None)
    usable = np.asarray(table["usable"], bool) if table is not None else np.zeros(0, bool)
    for t_i, f_i in pairs:
        k = carbon_rows.get(int(heavy[t_i]))
        if k is None:
            continue
        edge.append(float(table["edge_counts"].iloc[f_i]))
        if not usable[f_i]:
            continue
        pred = result.atoms_mean[f_i]
        cos_o.append(float(cosine(pred[0], truth["dos"][k, 0])))
        cos_u.append(float(cosine(pred[1], truth["dos"][k, 1])))
        # the spread belongs to the raw mean, which the model trains on area-normalised curves
        sd = atoms_std[f_i] if atoms_std is not None else None
        inside.append(float(np.mean(np.abs(truth["dos"][k] - pred) <= 2 * sd))
                      if sd is not None and np.any(sd > 0) else np.nan)
    cos_o, cos_u = np.array(cos_o), np.array(cos_u)
    return {
        "n_true": n_true, "n_found": n_found,
        "recall": len(pairs) / n_true if n_true else np.nan,
        "precision": len(pairs) / n_found if n_found else np.nan,
        "position_error_nm": float(np.median(err)) if len(err) else np.nan,
        "n_carbon": len(carbon_rows), "n_carbon_scored": int(cos_o.size),
        "cosine_occupied": cos_o, "cosine_unoccupied": cos_u,
        "median_cosine_occupied": float(np.nanmedian(cos_o)) if cos_o.size else np.nan,
        "median_cosine_unoccupied": float(np.nanmedian(cos_u)) if cos_u.size else np.nan,
        "edge_counts_median": float(np.median(edge)) if edge else np.nan,
        "inside_2sigma": np.array(inside),
    }
