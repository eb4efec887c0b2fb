"""Training and evaluation of the spectrum-to-DOS model on a database built by the backend.

Modules: :mod:`~.dataset` (rows from a SiteTable), :mod:`~.noise` (simulated counts),
:mod:`~.splits` (by molecule), :mod:`~.loop` (Adam, early stopping, ensembles), :mod:`~.metrics`,
:mod:`~.evaluate`, :mod:`~.train` (one run, ``corefit train``), :mod:`~.report` (model card),
:mod:`~.cli`.
"""
