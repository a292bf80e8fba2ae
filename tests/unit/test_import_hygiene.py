"""Who may import what (STYLE.md): the data plane is pure; the TUI sees only router.control."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IO_MODULES = {"asyncio", "uvloop", "pytun", "socket", "time", "subprocess", "textual", "select"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_dataplane_packet_and_helpers_do_no_io_and_read_no_clock():
    for folder in ("router/packet", "router/dataplane", "router/helpers"):
        for path in (ROOT / folder).glob("*.py"):
            bad = {n for n in imports(path) if n.split(".")[0] in IO_MODULES}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_packet_imports_only_the_standard_library_and_itself():
    for path in (ROOT / "router/packet").glob("*.py"):
        for name in imports(path):
            local = name.startswith(".") and not name.startswith("..")
            assert local or name.split(".")[0] in sys.stdlib_module_names, f"{path.name} imports {name}"
