"""The exception type for user mistakes."""


class UserError(ValueError):
    """A mistake in the user's input (config, data, checkpoint, command line).

    The command line prints its message, without a traceback, and exits with
    status 2. The message names the problem and the fix. It is a ``ValueError``,
    so library callers that catch ``ValueError`` (what the library's constructors
    raise for bad arguments) catch it too.
    """
