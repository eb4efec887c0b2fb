"""The ``corefit`` command.

Each sub-command lives beside the code it drives (``backend/cli.py``, ``training/cli.py``,
``model/cli.py``, ...) and registers itself through an ``add_parser(subparsers)`` function, so
that this file stays a thin dispatcher.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from napari_corefit import __version__

# (module, attribute): each provides add_parser(subparsers) that sets ``func`` on its parser
_SUBCOMMANDS = [
    "napari_corefit.backend.cli",
    "napari_corefit.training.cli",
    "napari_corefit.model.cli",
    "napari_corefit.sample_data.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corefit",
        description="Ground-state site DOS from carbon K-edge spectra: build the training "
        "database (PySCF), train and evaluate the model, predict on spectrum images.",
    )
    parser.add_argument("--version", action="version", version=f"corefit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("napari_corefit"):
                continue  # that part of the package is not installed
            # a missing optional dependency disables only the commands that need it (a build
            # machine may have PySCF but no napari or HyperSpy)
            _missing[name] = exc.name
            continue
        module.add_parser(sub)
    return parser


_missing = {}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        for name, module in _missing.items():
            print(f"(commands of {name} unavailable: missing Python module {module!r})",
                  file=sys.stderr)
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("corefit: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        # user errors (bad file, bad option, model mismatch) get one clear line, not a traceback
        print(f"corefit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
