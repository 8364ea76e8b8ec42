"""The README's command reference is generated from the app; it must match the app as it is now."""

from __future__ import annotations

from pathlib import Path

from patchwork_cli.cli.reference import END, START, readme_section, render_reference, update_readme

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_command_reference_is_current():
    assert readme_section(README) == render_reference(), (
        "README.md's command reference is out of date: run python -m patchwork_cli.cli.reference README.md"
    )


def test_reference_lists_every_command_and_option():
    reference = render_reference()
    for heading in ("`patchwork init`", "`patchwork extract`", "`patchwork classes rename`", "`patchwork label`"):
        assert f"#### {heading}" in reference
    for option in ("--shard <str>", "--if-changed", "--retry-failed", "--debug", "--import <path>"):
        assert option in reference


def test_update_rewrites_only_the_generated_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{START}\nstale text\n{END}\n\nafter\n")
    assert update_readme(readme) is True
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "stale text" not in text and readme_section(readme) == render_reference()
    assert update_readme(readme) is False
