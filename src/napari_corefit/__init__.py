"""napari-corefit: ground-state site DOS from carbon K-edge spectrum images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
