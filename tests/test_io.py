"""Reading spectrum images of every supported format, pairing ADF/low-loss, writing results."""

import gzip
import shutil
import warnings
from pathlib import Path

import hyperspy.api as hs
import numpy as np
import pytest

from napari_corefit import io
from napari_corefit.io import CorefitIOError, CorefitIOWarning, load_spectrum_image

DATA = Path(__file__).parent / "data"


def carbon_counts(shape, offset=260.0, scale=0.1, n=400, seed=0):
    """Poisson counts: zero-loss peak, power-law background, C K edge (pi* + step at 284 eV)."""
    energy = offset + scale * np.arange(n)
    background = 2e6 * np.maximum(energy, 5.0) ** -2.0 + 1e5 * np.exp(-0.5 * (energy / 0.3) ** 2)
    edge = 40 * np.exp(-0.5 * ((energy - 285.0) / 0.5) ** 2) + 15 / (1 + np.exp(-(energy - 290)))
    edge[energy < 284] = 0
    rng = np.random.default_rng(seed)
    return rng.poisson(np.broadcast_to(background + edge, tuple(shape) + (n,))).astype("float32")


def eels_signal(shape=(3, 4), offset=260.0, scale=0.1, n=400, units="eV", pixel=0.25):
    signal = hs.signals.Signal1D(carbon_counts(shape, offset, scale, n))
    energy = signal.axes_manager.signal_axes[0]
    energy.name, energy.units, energy.offset, energy.scale = "Energy loss", units, offset, scale
    for axis, name in zip(signal.axes_manager.navigation_axes, ("x", "y")):
        axis.name, axis.units, axis.scale, axis.offset = name, "nm", pixel, 1.0
    return signal


def adf_image(shape=(3, 4), title="HAADF"):
    image = hs.signals.Signal2D(np.arange(np.prod(shape), dtype="float32").reshape(shape))
    image.metadata.General.title = title
    return image


@pytest.fixture
def si_file(tmp_path):
    path = tmp_path / "si.hspy"
    eels_signal().save(path)
    return path


def test_hspy_spectrum_image_keeps_calibration_and_sums_survey(si_file):
    si = load_spectrum_image(si_file)
    assert si.signal.metadata.Signal.signal_type == "EELS"
    assert si.navigation_shape == (3, 4)
    assert si.energy.offset == pytest.approx(260.0)
    assert si.energy.scale == pytest.approx(0.1)
    assert si.energy.range == pytest.approx((260.0, 299.9))
    assert si.energy.units == "eV"
    np.testing.assert_allclose(si.survey, si.signal.data.sum(axis=-1), rtol=1e-6)
    assert si.survey.shape == (3, 4)
    assert si.adf is None and si.lowloss is None
    nav = si.navigation_axes()
    assert [a["name"] for a in nav] == ["y", "x"]
    assert si.pixel_size == (0.25, 0.25)
    assert not si.lazy and si.warnings == []


def test_lazy_load_reads_chunks_and_gives_same_survey(si_file):
    eager = load_spectrum_image(si_file, lazy=False)
    lazy = load_spectrum_image(si_file, lazy=True)
    assert lazy.lazy
    assert hasattr(lazy.signal.data, "dask")  # spectra stay on disk
    np.testing.assert_allclose(lazy.survey, eager.survey)


def test_lazy_is_chosen_for_files_above_threshold(si_file, monkeypatch):
    assert not load_spectrum_image(si_file).lazy
    monkeypatch.setattr(io.load, "LAZY_ABOVE_BYTES", 1)
    assert load_spectrum_image(si_file).lazy


def test_zspy_directory_store(tmp_path):
    path = tmp_path / "si.zspy"
    eels_signal(shape=(2, 5)).save(path)
    assert path.is_dir()
    si = load_spectrum_image(path, lazy=True)
    assert si.navigation_shape == (2, 5)
    assert si.energy.offset == pytest.approx(260.0)
    np.testing.assert_allclose(si.survey, np.asarray(si.signal.data.sum(axis=-1)), rtol=1e-6)


def test_msa_single_spectrum(tmp_path):
    path = tmp_path / "spectrum.msa"
    eels_signal(shape=()).save(path)
    si = load_spectrum_image(path)
    assert si.navigation_shape == ()
    assert si.survey.shape == (1, 1)
    assert si.energy.offset == pytest.approx(260.0)
    assert si.energy.size == 400
    assert si.survey[0, 0] == pytest.approx(float(si.signal.data.sum()), rel=1e-6)


def test_line_scan(tmp_path):
    path = tmp_path / "line.hspy"
    eels_signal(shape=(7,)).save(path)
    si = load_spectrum_image(path)
    assert si.navigation_shape == (7,)
    assert si.survey.shape == (1, 7)
    assert [a["size"] for a in si.navigation_axes()] == [1, 7]


def test_ncem_emd_spectrum_image_gets_its_energy_axis_back(tmp_path):
    # NCEM EMD keeps axis names/units but not which axes navigate
    path = tmp_path / "si.emd"
    eels_signal(shape=(3, 2)).save(path)
    assert hs.load(path).axes_manager.navigation_dimension == 0
    si = load_spectrum_image(path)
    assert si.navigation_shape == (3, 2)
    assert si.energy.offset == pytest.approx(260.0)
    assert si.energy.scale == pytest.approx(0.1)
    assert si.signal.metadata.Signal.signal_type == "EELS"


def test_velox_emd_picks_eels_si_and_df_image():
    # real Velox file (HAADF-like DF-S image + EELS SI + EDS stream), see tests/data/README.md
    for lazy in (False, True):
        si = load_spectrum_image(DATA / "velox_eels_small.emd", lazy=lazy)
        assert si.navigation_shape == (16, 20)
        assert si.signal.metadata.Signal.signal_type == "EELS"
        assert si.energy.offset == pytest.approx(218.7614)
        assert si.energy.scale == pytest.approx(0.1692)
        assert si.energy.covers(284.0)
        assert si.adf is not None and si.adf.metadata.General.title == "DF-S"
        assert si.image.shape == (16, 20)
        assert si.survey.sum() == pytest.approx(16380307)
        assert si.navigation_axes()[1]["units"] == "nm"


@pytest.fixture
def dm4_eels_si(tmp_path):
    # real Gatan DM4 EELS SI from RosettaSciIO's test data (stored gzipped), 2 x 2 x 2048
    path = tmp_path / "EELS_SI.dm4"
    with gzip.open(DATA / "dm4_EELS_SI.dm4.gz") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def test_dm4_eels_si_that_misses_the_carbon_edge_is_refused(dm4_eels_si):
    with pytest.raises(CorefitIOError, match=r"EELS_SI\.dm4.*300\.0-2347\.0 eV.*284"):
        load_spectrum_image(dm4_eels_si)


def test_dm4_eels_si_with_dm3_adf_from_second_file(dm4_eels_si):
    with pytest.warns(CorefitIOWarning, match="negative"):
        si = load_spectrum_image(dm4_eels_si, adf=DATA / "dm3_image_2x2.dm3", edge=None)
    assert si.navigation_shape == (2, 2)
    assert si.energy.offset == pytest.approx(300.0)
    assert si.energy.scale == pytest.approx(1.0)
    assert si.adf.data.shape == (2, 2)
    np.testing.assert_array_equal(si.image, np.asarray(si.adf.data))
    assert si.pixel_size == pytest.approx((0.0019920736, 0.0019920736))


def test_adf_from_second_file_and_shape_check(tmp_path, si_file):
    good, bad = tmp_path / "adf.hspy", tmp_path / "adf_bad.hspy"
    adf_image((3, 4)).save(good)
    adf_image((4, 4)).save(bad)
    si = load_spectrum_image(si_file, adf=good)
    np.testing.assert_array_equal(si.image, np.arange(12).reshape(3, 4))
    with pytest.raises(CorefitIOError, match=r"adf_bad\.hspy.*\(3, 4\)"):
        load_spectrum_image(si_file, adf=bad)


def test_adf_signal_in_memory_is_checked(si_file):
    with pytest.raises(CorefitIOError, match="ADF image has shape"):
        load_spectrum_image(si_file, adf=adf_image((2, 2)))
    assert load_spectrum_image(si_file, adf=adf_image((3, 4))).adf is not None


def test_lowloss_second_file(tmp_path, si_file):
    path = tmp_path / "lowloss.hspy"
    eels_signal(offset=-5.0, scale=0.05).save(path)
    si = load_spectrum_image(si_file, lowloss=path)
    assert si.lowloss.metadata.Signal.signal_type == "EELS"
    assert si.lowloss.axes_manager.signal_axes[0].offset == pytest.approx(-5.0)

    no_zlp = tmp_path / "no_zlp.hspy"
    eels_signal(offset=10.0).save(no_zlp)
    with pytest.raises(CorefitIOError, match=r"no_zlp\.hspy.*0 eV"):
        load_spectrum_image(si_file, lowloss=no_zlp)
    other_scan = tmp_path / "other_scan.hspy"
    eels_signal(shape=(2, 2), offset=-5.0).save(other_scan)
    with pytest.raises(CorefitIOError, match=r"other_scan\.hspy.*\(2, 2\).*\(3, 4\)"):
        load_spectrum_image(si_file, lowloss=other_scan)


def test_kev_axis_is_converted_with_a_warning(tmp_path):
    path = tmp_path / "kev.hspy"
    eels_signal(offset=0.26, scale=1e-4, units="keV").save(path)
    with pytest.warns(CorefitIOWarning, match="converted from keV"):
        si = load_spectrum_image(path)
    assert si.energy.offset == pytest.approx(260.0)
    assert si.energy.scale == pytest.approx(0.1)
    assert si.signal.axes_manager.signal_axes[0].units == "eV"


def test_missing_units_with_calibration_assumes_ev_with_a_warning(tmp_path):
    path = tmp_path / "nounits.hspy"
    eels_signal(units="").save(path)
    with pytest.warns(CorefitIOWarning, match=r"nounits\.hspy: the energy axis has no units"):
        si = load_spectrum_image(path)
    assert si.energy.offset == pytest.approx(260.0)


def test_in_memory_signal_is_checked_like_a_file():
    si = load_spectrum_image(eels_signal(shape=(2, 2)))
    assert si.path is None and si.survey.shape == (2, 2)
    with pytest.raises(CorefitIOError, match="<in-memory signal>.*20.0-59.9 eV"):
        load_spectrum_image(eels_signal(offset=20.0))


def test_write_results_round_trip(tmp_path):
    dos = eels_signal(shape=(2, 3), offset=-15.0, n=300)
    std = eels_signal(shape=(2, 3), offset=-15.0, n=300)
    written = io.write_results(tmp_path / "out" / "result.hspy", {"": dos, "std": std})
    assert [p.name for p in written] == ["result.hspy", "result_std.hspy"]
    back = hs.load(written[0])
    assert back.axes_manager.signal_axes[0].units == "eV"
    assert back.axes_manager.signal_axes[0].offset == pytest.approx(-15.0)
    assert back.axes_manager.navigation_axes[0].units == "nm"
    np.testing.assert_array_equal(back.data, dos.data)
    with pytest.raises(CorefitIOError, match="exists already"):
        io.write_results(written[0], dos, overwrite=False)
    with pytest.raises(CorefitIOError, match=r"result\.tif.*\.hspy"):
        io.write_results(tmp_path / "result.tif", dos)


def test_clean_file_gives_no_warning(si_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorefitIOWarning)
        load_spectrum_image(si_file)


def test_lazy_load_never_holds_the_whole_spectrum_image(tmp_path, si_file):
    import tracemalloc

    data = np.ones((64, 64, 512), dtype="float32")  # 8 MiB
    big = hs.signals.Signal1D(data)
    axis = big.axes_manager.signal_axes[0]
    axis.units, axis.offset, axis.scale = "eV", 250.0, 0.1
    path = tmp_path / "big.hspy"
    big.save(path, chunks=(16, 16, 512))
    del big
    load_spectrum_image(si_file, lazy=True)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        si = load_spectrum_image(path, lazy=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < data.nbytes / 2, f"peak {peak / 2**20:.1f} MiB while reading lazily"
    np.testing.assert_array_equal(si.survey, np.full((64, 64), 512.0))
