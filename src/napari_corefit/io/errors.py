"""Errors and warnings for spectrum-image files that cannot be used as they are."""

from __future__ import annotations


class CorefitIOError(ValueError):
    """A file that cannot be used as a carbon K-edge spectrum image.

    The message always starts with the file's path and then says what is wrong with it, so that
    the ``corefit`` command can print it as one line. It derives from ``ValueError`` because the
    problem is in the data the user gave, not in the program.
    """


class CorefitIOWarning(UserWarning):
    """A file that can be used, but not as it is (e.g. units converted, NaN pixels masked)."""


def file_message(path, problem: str) -> str:
    """Prefix a problem with the file it belongs to.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file; ``None`` for a signal given in memory.
    problem : str
        What is wrong, as a sentence fragment.

    Returns
    -------
    str

    Examples
    --------
    >>> file_message("a.hspy", "no energy axis")
    'a.hspy: no energy axis'
    """
    where = "<in-memory signal>" if path is None else str(path)
    return f"{where}: {problem}"
