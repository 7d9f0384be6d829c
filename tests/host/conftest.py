import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from host_fixture import Host  # noqa: E402


@pytest.fixture
def host():
    h = Host()
    yield h
    h.close()
