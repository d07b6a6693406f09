"""The one exception type that reaches the user as a one-line message (exit code 2)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment the user can fix.

    The message is one line naming the problem and the fix, e.g.
    ``teacher file not found: model.onnx (check the path given to --teacher)``.
    The CLI prints it as ``distilgan: error: <message>`` and exits with code 2.
    """

    exit_code = 2
