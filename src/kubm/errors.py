"""One error family for everything a user can cause (docs/design.md, "Errors").

Every error that bad input, a missing file or an unusable machine can raise derives from
:class:`KubmError`, through one class per layer. The CLI catches this family only: it
prints the message (which names the problem and the fix) and exits 2. Anything else is a
bug and keeps its traceback.

Each layer class also derives from the builtin that callers caught before the family
existed (``ValueError`` for bad values, ``RuntimeError`` for a failed run,
``FileNotFoundError`` for a missing file), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["KubmError", "ConfigError", "DataError", "MissingInput", "ModelError", "SimError", "PerceptionError",
           "PolicyError", "StageError"]


class KubmError(Exception):
    """A problem with the user's input, files or machine; the message says how to fix it."""


class ConfigError(KubmError, ValueError):
    """The config (or a command-line value) is invalid."""


class DataError(KubmError, ValueError):
    """A store, feature cache or result document is missing, corrupt or mismatched."""


class MissingInput(KubmError, FileNotFoundError):
    """A required input file or directory does not exist."""


class ModelError(KubmError, ValueError):
    """A saved model or checkpoint cannot be used (missing, corrupt, or for other data)."""


class SimError(KubmError, RuntimeError):
    """A simulator cannot be built, reset or rendered on this machine."""


class PerceptionError(KubmError, RuntimeError):
    """A perception backend cannot run (package, device or weights missing)."""


class PolicyError(KubmError, RuntimeError):
    """A fit cannot produce a usable model (it diverged, or its inputs cannot be fitted)."""


class StageError(KubmError, ValueError):
    """A pipeline stage cannot run on its inputs."""
