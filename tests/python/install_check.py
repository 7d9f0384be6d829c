"""Run by install_test.cmake: the installed package imports from the site dir given and
works (open a store, append, read, rebuild a screen). Not a pytest module."""

import os
import sys

site, db = sys.argv[1], sys.argv[2]
import dispatch  # noqa: E402

where = os.path.realpath(dispatch.__file__)
assert where.startswith(os.path.realpath(site) + os.sep), where
assert os.path.realpath(dispatch._dispatch.__file__).startswith(os.path.realpath(site)), \
    dispatch._dispatch.__file__
with dispatch.EventStore(db) as store:
    store.append("r", dispatch.NewEvent("pty:stdout", "chunk", b"installed\r\n"))
    assert [e.payload for e in store.read("r")] == [b"installed\r\n"]
    assert dispatch.screen(store, "r").lines[0] == "installed"
print("dispatch", dispatch.__version__, "imported from", where)
