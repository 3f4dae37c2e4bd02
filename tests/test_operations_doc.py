"""docs/OPERATIONS.md lists every setting, as the settings object defines them."""

from __future__ import annotations

from talicada import settings_doc
from talicada.settings import Settings


def _document() -> str:
    return settings_doc.DOCUMENT.read_text(encoding="utf-8")


def test_every_setting_has_a_row_in_the_operations_guide() -> None:
    """Each field of Settings and of the structs below it appears as a row."""
    paths = [row.path for row in settings_doc.rows()]
    # The walk reaches the top level, platforms and their back-end tables.
    assert {"port", "redis_url", "platforms[].cores", "platforms[].skaha.url"} <= set(paths)
    assert len(paths) > len(Settings.__struct_fields__)
    assert settings_doc.missing(_document()) == []


def test_a_setting_missing_from_the_guide_is_named() -> None:
    """Removing one row makes the check name exactly that setting."""
    lines = [line for line in _document().splitlines() if not line.startswith("| `offer_ttl` |")]
    assert settings_doc.missing("\n".join(lines)) == ["offer_ttl"]


def test_the_table_in_the_guide_is_the_generated_one() -> None:
    """The table is current (run ``python -m talicada.settings_doc`` after changing settings)."""
    text = _document()
    assert settings_doc.render(text) == text, "run `python -m talicada.settings_doc`"
    assert settings_doc.main(["--check"]) == 0


def test_every_setting_says_what_it_does() -> None:
    """No row without a description: a ``#:`` comment or a docstring entry per field."""
    undescribed = [row.path for row in settings_doc.rows() if not row.description]
    assert undescribed == []
