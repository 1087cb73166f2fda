"""User-facing input errors.

Every check at a public boundary raises :class:`InputError` with a one-line message that names the
problem. The CLI prints such errors as ``hebbret: error: <message>`` and exits with status 2,
without a traceback; any other exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad user input: wrong shape, NaN, empty database, unknown dataset, corrupt image, ..."""
