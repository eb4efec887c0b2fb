"""Reading EELS spectrum images (HyperSpy/RosettaSciIO) and writing results.

No Qt and no napari here; ``napari_reader`` only builds layer-data tuples.
"""

from napari_corefit.io.errors import CorefitIOError, CorefitIOWarning
from napari_corefit.io.load import LAZY_ABOVE_BYTES, SUPPORTED_EXTENSIONS, load_spectrum_image
from napari_corefit.io.spectrum_image import CARBON_K_EDGE_EV, EnergyAxis, SpectrumImage
from napari_corefit.io.write import write_results

__all__ = [
    "CARBON_K_EDGE_EV",
    "CorefitIOError",
    "CorefitIOWarning",
    "EnergyAxis",
    "LAZY_ABOVE_BYTES",
    "SUPPORTED_EXTENSIONS",
    "SpectrumImage",
    "load_spectrum_image",
    "write_results",
]
