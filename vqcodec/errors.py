"""Domain errors: the CLI turns each into one line on stderr and a non-zero exit status."""


class VqvError(Exception):
    """A failure the user can act on (bad input, missing model, damaged file...)."""


class InputError(VqvError):
    """The input file cannot be read as what it should be."""


class FormatError(VqvError):
    """A .vqv file is malformed, truncated, damaged or of an unknown version."""


class ModelMismatch(VqvError):
    """The .vqv file was written with a model other than the one at hand."""
