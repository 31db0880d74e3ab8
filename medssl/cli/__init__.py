"""The ``medssl`` command line: one thin module per subcommand over the library.

Each module here that defines ``COMMAND`` (the subcommand's name), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` is a subcommand; :mod:`medssl.cli.main` discovers them, so adding a command is adding a module.
Modules import heavy libraries inside ``run`` so that ``medssl --help`` stays fast.
"""

from __future__ import annotations

__all__: list[str] = []
