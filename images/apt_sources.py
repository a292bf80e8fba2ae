"""The Debian mirrors apt is configured with, read from its own sources (one-line and deb822 formats).

    apt_sources.py SUITE      prints "MIRROR SECURITY-MIRROR" (or "-" for no security mirror); exit 1 without
                              a source for SUITE

images/build.sh reads the mirror it debootstraps from here; tests/appliance/test_fresh_machine.py imports it.
"""

from __future__ import annotations

import glob
import re
import sys


def entries() -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) of every enabled `deb` entry in /etc/apt/sources.list{,.d}."""
    found = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1], words[2], words[3:]))
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", open(path).read()):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0] != "no":
                found += [(uri, suite, fields.get("components", []))
                          for uri in fields.get("uris", []) for suite in fields.get("suites", [])]
    return found


def mirrors(suite: str) -> list[str]:
    """The mirrors that carry SUITE, in apt's order, without a trailing slash."""
    return [uri.rstrip("/") for uri, s, _ in entries() if s == suite]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    suite = argv[0]
    main_mirrors, security = mirrors(suite), mirrors(f"{suite}-security")
    if not main_mirrors:
        print(f"no apt source for {suite} in /etc/apt/sources.list or /etc/apt/sources.list.d", file=sys.stderr)
        return 1
    print(main_mirrors[0], security[0] if security else "-")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
