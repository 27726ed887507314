"""The one exception type users see: a clear, one-line message about what is wrong."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (whatever a library put in it), at most `limit`
    characters, or its type's name when it has none."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


class AekitError(Exception):
    """A problem with the user's input (data, file, option or model name).

    The command line prints the message on one line and exits non-zero; the Python API
    lets it propagate. Messages name the file, field or shape at fault.
    """


class TrainingDiverged(AekitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which checkpoint, if any, is kept."""
