"""Fixtures of the dispatch Python test suite.

The suite runs against the built package: ctest puts <build>/bindings/python
on PYTHONPATH (see tests/python/CMakeLists.txt). Every test gets its own
store file in a temp directory; nothing is shared between tests.
"""

import os
import sys

import pytest

import dispatch


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store.db")


@pytest.fixture
def store(store_path):
    s = dispatch.EventStore(store_path)
    yield s
    s.close()


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "workspaces"
    root.mkdir()
    return root


@pytest.fixture
def manager(store, workspace):
    m = dispatch.SessionManager(store, workspace, close_timeout=2.0)
    yield m
    m.close()


PYTHON = sys.executable if os.path.exists(sys.executable) else "/usr/bin/python3"
