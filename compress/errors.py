"""Errors that the CLI turns into exit codes: 2 for bad usage or input, 1 for a missed gate."""


class CompressError(Exception):
    """Bad usage or input. The message names the file, key or field and says what to do."""

    exit_code = 2


class GateFailed(CompressError):
    """A recipe target (size, fps) was missed; the run itself completed."""

    exit_code = 1
