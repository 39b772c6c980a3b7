"""Errors shared by the perception backends."""

from kubm.errors import PerceptionError


class BackendUnavailable(PerceptionError):
    """A backend cannot run on this machine (package, device or checkpoint missing).

    The message says what is missing and how to fix it. An explicitly requested
    backend raises this; only `auto` may choose another backend instead.
    """
