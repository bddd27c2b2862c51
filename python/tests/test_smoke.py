"""The extension module loads and reports the workspace's version."""
import re

import toolgraph


def test_the_extension_loads_and_has_a_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", toolgraph.__version__), toolgraph.__version__
