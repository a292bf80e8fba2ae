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


def test_the_data_plane_names_no_protocol_helper():
    """Helpers are built by the runtime and handed in: the data plane imports only their interface."""
    for path in (ROOT / "router/dataplane").glob("*.py"):
        for name in imports(path):
            if "helpers" in name:
                assert name == "..helpers.base", f"{path.name} imports {name}"


def test_a_helper_imports_no_other_helper():
    """A helper's modules (``x.py`` and ``x_*.py``) import the shared ones and their own, never another's."""
    shared = {"base", "offload", "records", "spec", "tcpstream"}  # the interface and its parts, TCP streams
    for path in (ROOT / "router/helpers").glob("*.py"):
        if path.stem in shared | {"__init__", "registry"}:
            continue
        family = path.stem.split("_")[0]
        for name in imports(path):
            if name.startswith(".") and not name.startswith(".."):
                module = name.lstrip(".")
                assert module in shared or module.split("_")[0] == family, f"{path.name} imports {name}"


def test_the_tui_sees_only_the_control_socket():
    """The dashboard imports router.control (protocol, schema, client) and nothing else of the router."""
    for path in (ROOT / "tui").rglob("*.py"):
        for name in imports(path):
            if name.startswith("router"):
                assert name == "router.control" or name.startswith("router.control."), f"{path.name} imports {name}"
