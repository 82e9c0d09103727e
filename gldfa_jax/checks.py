"""Argument checks shared by the public functions: one wording for every integer setting."""

import numpy as np


def check_int(name: str, value, least: int = 1, hint: str = "") -> int:
    """`value` as an int; a ValueError naming `name` when it is not an integer >= `least` (a bool is refused:
    True would pass as 1). `hint` is appended to the message, e.g. the usual value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}{hint}.")
    return int(value)
