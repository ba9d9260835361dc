"""One exception type for every user-facing error.

The CLI prints ``error: <message>`` on one line and exits non-zero; the message names the file or item
at fault. Library code raises it at the boundary (validation), never deep inside numeric loops.
"""


class LiidError(Exception):
    """A user-facing error: bad input, an existing output, a solver limit."""
