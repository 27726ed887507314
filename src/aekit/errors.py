"""The one exception type users see: a clear, one-line message about what is wrong."""


class AekitError(Exception):
    """A problem with the user's input (data, file, option or model name).

    The command line prints the message on one line and exits non-zero; the Python API
    lets it propagate. Messages name the file, field or shape at fault.
    """


class TrainingDiverged(AekitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which checkpoint, if any, is kept."""
