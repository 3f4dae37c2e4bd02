"""Refusing control characters in what a request supplies, naming the field.

A NUL in a path truncates it in every C API underneath (``open``, ``mount``,
a container runtime), and other control characters corrupt logs and
terminals, so no string in a request may carry them. Free text (a command,
a description) may still use tab, line feed and carriage return; a path, a
URL or a name may not, since a newline in a path is never meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

#: Never allowed: C0 controls other than tab, LF and CR; DEL; C1 controls.
_ANYWHERE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: Not allowed in paths, URLs and names either.
_IN_PATHS: Final = re.compile("[\x00-\x1f\x7f-\x9f]")

#: Keys whose values are paths, locations or names (in any dialect).
PATH_KEYS: Final = frozenset(
    {
        "path",
        "paths",
        "location",
        "locations",
        "url",
        "uri",
        "href",
        "image",
        "name",
        "resource",
        "resources",
        "storage",
        "did",
        "scope",
        "file",
        "directory",
        "target",
    }
)


def _describe(char: str) -> str:
    names = {"\x00": "NUL", "\t": "tab", "\n": "line feed", "\r": "carriage return"}
    name = names.get(char)
    code = f"U+{ord(char):04X}"
    return f"{code} ({name})" if name else code


def control_characters(doc: object) -> Iterator[tuple[str, str]]:
    """``(field path, reason)`` for every string in ``doc`` with a forbidden character.

    Walks iteratively (the body's nesting is bounded by the codec's limits but
    recursion is not needed). Keys are checked too: a key names a field.
    """
    stack: list[tuple[object, str, bool]] = [(doc, "", False)]
    while stack:
        value, path, strict = stack.pop()
        if isinstance(value, str):
            found = (_IN_PATHS if strict else _ANYWHERE).search(value)
            if found:
                yield (path or "$"), f"contains the control character {_describe(found.group())}"
        elif isinstance(value, dict):
            for key, member in value.items():
                name = str(key)
                where = f"{path}.{name}" if path else name
                if _IN_PATHS.search(name):
                    yield where, "the field name contains a control character"
                    continue
                stack.append((member, where, strict or name in PATH_KEYS))
        elif isinstance(value, list):
            stack.extend((member, f"{path}[{i}]", strict) for i, member in enumerate(value))
