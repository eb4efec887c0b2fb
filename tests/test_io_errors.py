"""Bad input: every problem gets a CorefitIOError (or a warning) that names the file."""

from pathlib import Path

import h5py
import hyperspy.api as hs
import numpy as np
import pytest

from napari_corefit.io import CorefitIOError, CorefitIOWarning, load_spectrum_image

DATA = Path(__file__).parent / "data"


def spectra(shape=(3, 4), offset=270.0, scale=0.1, n=200, units="eV"):
    rng = np.random.default_rng(1)
    signal = hs.signals.Signal1D(rng.poisson(50.0, tuple(shape) + (n,)).astype("float32"))
    axis = signal.axes_manager.signal_axes[0]
    axis.units, axis.offset, axis.scale = units, offset, scale
    return signal


def saved(signal, path):
    signal.save(path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.hspy: no such file"):
        load_spectrum_image(tmp_path / "nothing.hspy")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "image.tif"
    path.write_bytes(b"II*\x00")
    with pytest.raises(CorefitIOError, match=r"image\.tif: unsupported file type '\.tif'"):
        load_spectrum_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.dm4"
    path.touch()
    with pytest.raises(CorefitIOError, match=r"empty\.dm4: the file is empty"):
        load_spectrum_image(path)


@pytest.mark.parametrize("lazy", [False, True])
def test_truncated_hspy(tmp_path, lazy):
    path = saved(spectra(shape=(8, 8), n=400), tmp_path / "cut.hspy")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorefitIOError, match=r"cut\.hspy: .*(truncated|corrupt)"):
        load_spectrum_image(path, lazy=lazy)


def test_corrupt_dm3(tmp_path):
    path = tmp_path / "garbage.dm3"
    path.write_bytes(b"\x00\x00\x00\x03" + bytes(range(256)) * 4)
    with pytest.raises(CorefitIOError, match=r"garbage\.dm3: cannot be read"):
        load_spectrum_image(path)


def test_axis_not_covering_carbon_edge(tmp_path):
    path = saved(spectra(offset=400.0), tmp_path / "oxygen.hspy")
    with pytest.raises(CorefitIOError, match=r"oxygen\.hspy: the energy axis covers "
                                             r"400\.0-419\.9 eV .* carbon K edge at 284 eV"):
        load_spectrum_image(path)
    # the check can be moved (another edge) or switched off
    assert load_spectrum_image(path, edge=410.0).energy.covers(410.0)
    assert load_spectrum_image(path, edge=None).energy.size == 200


@pytest.mark.parametrize("lazy", [False, True])
def test_nan_and_inf_pixels_warn_with_count(tmp_path, lazy):
    signal = spectra()
    signal.data[0, 1, 5] = np.nan
    signal.data[2, 3, 7] = np.inf
    path = saved(signal, tmp_path / "holes.hspy")
    with pytest.warns(CorefitIOWarning, match=r"holes\.hspy: 2 of 12 spectra contain NaN or Inf"):
        si = load_spectrum_image(path, lazy=lazy)
    # the survey stays finite: bad channels do not poison the other pixels
    assert np.isfinite(si.survey).all()
    assert si.survey[0, 1] == pytest.approx(np.nansum(signal.data[0, 1]))


def test_all_nan_is_an_error(tmp_path):
    signal = spectra()
    signal.data[:] = np.nan
    path = saved(signal, tmp_path / "allnan.hspy")
    with pytest.raises(CorefitIOError, match=r"allnan\.hspy: every spectrum contains NaN"):
        load_spectrum_image(path)


def test_negative_counts_warn(tmp_path):
    signal = spectra()
    signal.data[1, 1, :10] = -3.0
    path = saved(signal, tmp_path / "negative.hspy")
    with pytest.warns(CorefitIOWarning, match=r"negative\.hspy: 10 channel values .* negative"):
        si = load_spectrum_image(path)
    assert len(si.warnings) == 1


def test_four_dimensional_data(tmp_path):
    path = saved(spectra(shape=(2, 3, 4)), tmp_path / "stack.hspy")
    with pytest.raises(CorefitIOError, match=r"stack\.hspy: the spectra have 3 navigation "
                                             r"dimensions"):
        load_spectrum_image(path)


def test_zero_size_axis(tmp_path):
    # HyperSpy refuses to write an empty axis; make a valid file, then empty its data
    path = saved(spectra(), tmp_path / "hollow.hspy")
    with h5py.File(path, "a") as f:
        group = f["Experiments/__unnamed__"]
        del group["data"]
        group.create_dataset("data", shape=(0, 4, 200), dtype="float32")
        group["axis-0"].attrs["size"] = 0
    with pytest.raises(CorefitIOError, match=r"hollow\.hspy: the data have an empty axis "
                                             r"\(shape \(0, 4, 200\)\)"):
        load_spectrum_image(path)


def test_uncalibrated_energy_axis(tmp_path):
    path = saved(spectra(offset=0.0, scale=1.0, units=""), tmp_path / "channels.hspy")
    with pytest.raises(CorefitIOError, match=r"channels\.hspy: the energy axis has no "
                                             r"calibration"):
        load_spectrum_image(path)


def test_uncalibrated_real_dm3_spectrum():
    with pytest.raises(CorefitIOError, match=r"dm3_spectrum_uncalibrated\.dm3: the energy axis "
                                             r"has no calibration"):
        load_spectrum_image(DATA / "dm3_spectrum_uncalibrated.dm3")


def test_signal_axis_in_other_units(tmp_path):
    path = saved(spectra(units="nm"), tmp_path / "lengths.hspy")
    with pytest.raises(CorefitIOError, match=r"lengths\.hspy: the signal axis is in 'nm'"):
        load_spectrum_image(path)


def test_image_stack_without_spectra_real_dm4():
    with pytest.raises(CorefitIOError, match=r"dm4_stack_2x2x2\.dm4: holds no 1-D EELS spectrum "
                                             r"signal \(found: .*Signal2D"):
        load_spectrum_image(DATA / "dm4_stack_2x2x2.dm4")



def test_decreasing_energy_axis(tmp_path):
    path = saved(spectra(offset=300.0, scale=-0.1), tmp_path / "backwards.hspy")
    with pytest.raises(CorefitIOError, match=r"backwards\.hspy: the energy axis has a "
                                             r"non-positive step \(-0\.1 eV\)"):
        load_spectrum_image(path)
