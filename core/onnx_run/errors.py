"""User-facing errors: one line, exit code 2, never a traceback."""


class UserError(Exception):
    """A mistake in what the user gave us (config key, file, flag).

    The message is one line that names the key or file, what was wrong and what is
    allowed. The CLI prints it as ``Error: <message>`` and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
