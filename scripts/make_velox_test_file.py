"""Shrink RosettaSciIO's Velox EELS+EDS example into the small test file tests/data/velox_eels_small.emd.

Usage: python scripts/make_velox_test_file.py example_velox_EELS_EDS.emd tests/data/velox_eels_small.emd

The source is ``rsciio/tests/data/emd/velox_EELS_EDS.zip`` of github.com/hyperspy/rosettasciio
(6.7 MB unzipped). Kept: the 20x16 DF-S image, the EDS spectrum stream (the Velox reader needs it
to find the scan), and the one EELS spectrum image of the three (Zebra detector bins) that covers
the carbon K edge, cut to 512 channels (218.8-305.2 eV) with its energy offset moved to match.
Dropped: the other images and EELS bins, the single EDS spectra, EDS quantification settings and
the thumbnail. Datasets are gzip-compressed; the groups use HDF5's compact ("latest") layout.
"""

import json
import sys

import h5py
import numpy as np

KEEP_EELS = "9cb61ef427f944e087bf1bff16754e2f"  # offset -21.5 eV, 0.1692 eV/channel
KEEP_IMAGE = "8fa1ffb18c834675b442e64ff9dd6fba"  # DF-S, 20 x 16
FIRST, COUNT = 1420, 512


def skip(name):
    parts = name.split("/")
    if name.startswith(("Data/Spectrum/", "SharedProperties/EDSSpectrumQuantificationSettings",
                        "Thumbnail")):
        return True
    if name.startswith("Data/EelsSpectrumImage/") and parts[2] != KEEP_EELS:
        return True
    return name.startswith("Data/Image/") and parts[2] != KEEP_IMAGE


def shifted_metadata(array):
    # one JSON text per column, NUL padded; only the energy offset changes
    array = array.copy()
    for column in range(array.shape[1]):
        meta = json.loads(array[:, column].tobytes().rstrip(b"\x00").decode())
        meta["Data"]["offset"] = float(meta["Data"]["offset"]) + FIRST * float(
            meta["Data"]["dispersion"])
        text = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        array[:, column] = 0
        array[: text.size, column] = text
    return array


def main(source, target):
    with h5py.File(source, "r") as src, h5py.File(target, "w", libver="latest") as out:
        out.attrs.update(dict(src.attrs))

        def copy(name, obj):
            if skip(name):
                return
            if isinstance(obj, h5py.Group):
                out.require_group(name).attrs.update(dict(obj.attrs))
                return
            data = obj[()]
            in_eels = name.startswith("Data/EelsSpectrumImage/")
            if in_eels and name.endswith("/Data"):
                data = data[:, FIRST: FIRST + COUNT, :]
            if in_eels and name.endswith("/AcquisitionMetadata"):
                data = shifted_metadata(data)
            options = {}
            if obj.dtype.kind != "O" and data.size > 64:
                options = dict(compression="gzip", compression_opts=9, shuffle=True, chunks=True)
            dataset = out.create_dataset(name, data=data, dtype=obj.dtype, **options)
            dataset.attrs.update(dict(obj.attrs))

        src.visititems(copy)


if __name__ == "__main__":
    main(*sys.argv[1:3])
