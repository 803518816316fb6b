"""The README's table of health checks is the registry's (issue 18 item 5): each row comes from the
check's registration (minnoctl/health/registry.py), so a check's docs live beside its code."""

from __future__ import annotations

from pathlib import Path

from minnoctl.health import registry

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_health_table_is_generated_from_the_registry():
    text = README.read_text(encoding="utf-8")
    assert text.count(registry.README_START) == 1 and text.count(registry.README_END) == 1
    assert registry.readme_with_table(text) == text, (
        "the README's health table differs from the registered checks — regenerate it with "
        "`python -m minnoctl.health --write-readme` (it rewrites the table between the two markers)")


def test_every_check_is_documented_where_it_is_registered():
    for spec in registry.checks():
        assert spec.description and spec.doc, spec.name
        assert "|" not in spec.doc + spec.levels, f"{spec.name}: a | would split the README's row"
        row = next(line for line in registry.markdown_table().splitlines() if line.startswith(f"| `{spec.name}` |"))
        assert spec.doc in row and spec.levels in row


def test_write_readme_rewrites_only_the_table(tmp_path):
    from minnoctl.health.__main__ import main

    stale = README.read_text(encoding="utf-8").replace("| `xid_age` |", "| `xid_age_old` |")
    copy = tmp_path / "README.md"
    copy.write_text(stale, encoding="utf-8")
    assert main(["--write-readme", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")
