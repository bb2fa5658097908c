"""The error types of bad user input, in a module of their own so that every layer (the spec, the
sweep, the analysis, the command line) can raise them without importing the command line.

Both mean: the command line prints the message (one line, naming the file and the key) and exits 2.
"""


class SpecError(ValueError):
    """A bad study spec: unknown key, unknown name, a range the wrong way round..."""


class UsageError(ValueError):
    """Bad arguments or folder (not the spec itself)."""
