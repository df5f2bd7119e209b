"""The architecture drawn in the README is the one the imports have.

Every module of the package sits in one layer; a module imports only from its own layer or
the layers below. Only the registry's client and its helpers import kazoo; only the modules
that talk to PostgreSQL or PgBouncer import psycopg; the daemon and the watcher do not import
each other. The layer table is the README's "Architecture" block, so the picture cannot drift.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agrajag

PACKAGE = Path(agrajag.__file__).parent
README = PACKAGE.parent / "README.md"

#: Who may import these libraries (and nothing else may, directly).
ONLY = {
    "kazoo": {
        "registry.client",
        "registry.boundary",
        "registry.connection",
        "registry.maintenance",
    },
    "psycopg": {"daemon.probe", "daemon.repmgr", "sinks.pgbouncer_admin"},
}


def modules() -> dict[str, Path]:
    """Module name relative to the package ('' is the package itself) -> file."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Top-level names of what `path` imports: `agrajag.x.y` as 'x.y', others by package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        for target in targets:
            if target == "agrajag" or target.startswith("agrajag."):
                names.add(target.removeprefix("agrajag").removeprefix("."))
            else:
                names.add(target.split(".")[0])
    return names


def layers() -> list[set[str]]:
    """The README's architecture block, top layer first: each line names its modules
    (`daemon.{loop,decision}` expands to both) before two or more spaces and a comment."""
    text = README.read_text()
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    result = []
    for line in block.strip().splitlines():
        names = line.split("  #", 1)[0].split()
        layer = set()
        for name in names:
            match = re.fullmatch(r"(.*)\{(.*)\}", name)
            if match:
                layer |= {match[1] + part for part in match[2].split(",")}
            else:
                layer.add(name)
        result.append(layer)
    return result


def layer_of() -> dict[str, int]:
    """Module -> its layer's height (0 is the bottom)."""
    drawn = layers()
    return {m: len(drawn) - 1 - i for i, layer in enumerate(drawn) for m in layer}


def test_every_module_is_drawn_once() -> None:
    drawn = layers()
    names = [m for layer in drawn for m in layer]
    assert len(names) == len(set(names)), "a module is drawn twice"
    assert set(modules()) - {"", "__main__"} == set(names)


@pytest.mark.parametrize("module", sorted(set(modules()) - {"", "__main__"}))
def test_imports_point_down(module: str) -> None:
    height = layer_of()
    for target in imports(modules()[module]):
        if target in height:
            assert height[target] <= height[module], f"{module} imports {target}, drawn above it"
        elif target in ONLY:
            assert module in ONLY[target], f"{module} imports {target}"
        elif target and target.split(".")[0] in {"daemon", "watch", "sinks", "registry"}:
            pytest.fail(f"{module} imports agrajag.{target}, which is not drawn")


def test_the_daemon_and_the_watcher_do_not_import_each_other() -> None:
    for module, path in modules().items():
        side = module.split(".")[0]
        other = {"daemon": "watch", "watch": "daemon"}.get(side)
        if other:
            crossing = {t for t in imports(path) if t.split(".")[0] == other}
            assert not crossing, f"{module} imports {crossing}"


@pytest.mark.parametrize(
    "module",
    [
        "agrajag.cli",
        "agrajag.daemon.notify",
        "agrajag.daemon.wakeup",
        "agrajag.daemon.decision",
        "agrajag.watch.rules",
    ],
)
def test_light_modules_load_neither_kazoo_nor_psycopg(module: str) -> None:
    """`agrajag notify` runs in repmgr's event hook: it must start fast; the rules are pure."""
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "'kazoo'" not in loaded and "'psycopg'" not in loaded, loaded


#: The largest module before the package was split into daemon/, watch/ and registry/.
LARGEST_LINES = 414


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_outgrows_the_largest_before_the_split(module: str) -> None:
    """Small files with names that explain them: a module past this size hides a part."""
    lines = len(modules()[module].read_text().splitlines())
    assert lines <= LARGEST_LINES, f"{module} has {lines} lines"
