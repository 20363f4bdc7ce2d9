"""The one exception type for user mistakes."""


class UserError(Exception):
    """A mistake in the user's input (config, data, checkpoint, command line).

    The command line prints its message, without a traceback, and exits with
    status 2. The message names the problem and the fix.
    """
