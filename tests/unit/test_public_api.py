"""The public surface: what `agrajag` exports, and one exception tree under AgrajagError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import agrajag
from agrajag.errors import AgrajagError


def test_exported_members() -> None:
    assert agrajag.__all__ == ["AgrajagError", "__version__"]


def test_every_exception_agrajag_defines_is_an_agrajag_error() -> None:
    modules = [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(agrajag.__path__, "agrajag.")
        if info.name != "agrajag.__main__"
    ]
    defined = {
        obj
        for module in modules
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__.startswith("agrajag.")
    }
    assert len(defined) >= 8  # the tree is really walked
    assert {cls.__name__ for cls in defined if not issubclass(cls, AgrajagError)} == set()
