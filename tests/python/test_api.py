"""The package's surface: every public name is in the .pyi stubs (and every stubbed name
exists), and everything public carries a docstring."""

import ast
import inspect
import os
import re

import dispatch

STUB = os.path.join(os.path.dirname(dispatch.__file__), "__init__.pyi")


def stub_names():
    tree = ast.parse(open(STUB, encoding="utf-8").read())
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            names = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
            members[node.name] = names
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
        elif isinstance(node, ast.Assign):
            top.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return top, members


def public_members(cls):
    names = set()
    for klass in cls.__mro__:
        if klass.__module__ in ("builtins",) or klass is object:
            continue
        if klass.__module__ not in ("dispatch", "dispatch._dispatch", "dispatch._errors"):
            continue
        names.update(n for n in vars(klass) if not n.startswith("_"))
        init = vars(klass).get("__init__")
        if inspect.isfunction(init):                # instance attributes of the facade
            names.update(n for n in re.findall(r"self\.(\w+)\s*(?::[^=]*)?=", inspect.getsource(init))
                         if not n.startswith("_"))
    return names


def test_stubs_match_the_runtime_api():
    top, members = stub_names()
    assert set(dispatch.__all__) <= top, set(dispatch.__all__) - top
    assert "__version__" in top
    for name in dispatch.__all__:
        obj = getattr(dispatch, name)
        if not inspect.isclass(obj):
            continue
        runtime = public_members(obj)
        stubbed = set(members.get(name, ()))
        for base in obj.__mro__[1:]:              # members stubbed on a stubbed base class
            stubbed |= members.get(base.__name__, set())
        assert runtime <= stubbed, f"{name}: not in the stubs: {sorted(runtime - stubbed)}"
        dunder = {n for n in stubbed if n.startswith("__")}
        extra = stubbed - dunder - runtime - {"code", "detail", "tail"}   # Error's instance attrs
        assert not extra, f"{name}: stubbed but missing: {sorted(extra)}"


def has_doc(obj, name):
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if not doc:
        return False
    lines = [l for l in doc.splitlines() if l.strip()]
    # pybind11 puts the signature first; a bare signature is not documentation.
    return len(lines) > 1 or not lines[0].startswith(name + "(")


def test_everything_public_has_a_docstring():
    missing = []
    for name in dispatch.__all__:
        obj = getattr(dispatch, name)
        if not has_doc(obj, name):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and not has_doc(value, attr):
                    missing.append(f"{name}.{attr}")
    assert missing == []
