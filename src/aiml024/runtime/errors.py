"""The one error a user can fix: bad input data, parameters or spec.

The library (data, training, splits, ...) and the steps raise it alike; the dispatcher
(`python -m aiml024.runtime`) prints `error: <message>` and exits 2. Any other exception is a
bug: exit 1 with a traceback.
"""

from __future__ import annotations


class StepError(ValueError):
    """Bad input data or parameters: the dispatcher prints `error: <message>` and exits 2.

    The message says what is wrong and where (column, file, URI, params key), for the person
    who wrote the Experiment, not for the developer.
    """


__all__ = ["StepError"]
