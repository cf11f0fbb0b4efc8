"""BadInput: the one exception the CLI turns into one line on stderr and exit code 2."""


class BadInput(Exception):
    """Bad user input: the message names the file, key or value."""
