from __future__ import annotations

import configparser
import re
from pathlib import Path

from medssl.cli.main import build_parser, discover_commands

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    names = set()
    for line in config["options"]["install_requires"].split("\n"):
        if line.strip():
            names.add(re.split(r"[<>=!\[ ]", line.strip())[0].lower())
    return names


def test_every_core_dependency_is_explained_in_docs():
    text = (ROOT / "docs" / "dependencies.md").read_text().lower()
    for name in _requirements():
        assert f"`{name}`" in text, f"{name} is a dependency but docs/dependencies.md does not say why"


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = discover_commands()
    assert "index" in commands
    for name in commands:
        try:
            parser.parse_args([name, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0
        out = capsys.readouterr().out
        assert f"medssl {name}" in out and len(out) > 200, name


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    block = "\n".join(lines[:6])
    assert "make demo" in block and "make test" in block


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
