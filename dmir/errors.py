"""Exceptions raised by dmir for bad input.

Every error a user can cause (a wrong size, an unknown name, a bad file) is a subclass of
:class:`DmirError`; its message says what was wrong and what is allowed. The CLI prints the
message on one line and exits with status 2.
"""


class DmirError(Exception):
    """Base class of all dmir input errors."""


class UnknownNameError(DmirError, KeyError):
    """An unknown operator, method, model or option name."""

    def __str__(self):  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


class ShapeError(DmirError, ValueError):
    """A tensor or image has a shape the operation does not accept."""


class ParameterError(DmirError, ValueError):
    """A parameter value is out of range or inconsistent."""


class InputError(DmirError, ValueError):
    """Input data is invalid (NaN/Inf pixels, unreadable file, ...)."""


class NumericalError(DmirError, FloatingPointError):
    """A computation produced NaN or Inf values (a prior that returns non-finite predictions,
    a diverging iteration)."""


class ResourceError(DmirError, MemoryError):
    """A run needs more memory than the device has (estimated before any work)."""


class UnknownKeywordError(DmirError, TypeError):
    """A function was given a keyword it does not take (named, with what it takes)."""
