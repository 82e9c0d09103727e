"""One config per experiment: each module's get_config() returns an ml_collections.ConfigDict."""
import os
import re

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def available_configs() -> list:
    """File names of the experiment configs here: modules with an argument-free get_config(), except the
    shared default base.py (helpers such as cuhk03_common.py take arguments; tools define none)."""
    names = []
    for name in sorted(os.listdir(DIRECTORY)):
        if not name.endswith(".py") or name.startswith("_") or name == "base.py":
            continue
        with open(os.path.join(DIRECTORY, name)) as f:
            if re.search(r"^def get_config\(\s*\)", f.read(), re.M):
                names.append(name)
    return names
