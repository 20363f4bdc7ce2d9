"""Helpers the command-line tests share."""

from __future__ import annotations

from typing import Iterable, List, Tuple


def sets(items: Iterable[str]) -> List[str]:
    """``--set`` arguments for config overrides."""
    return [x for s in items for x in ("--set", s)]


def run_cli(args, capsys) -> Tuple[int, str, str]:
    """Run ``search.py`` in-process; its exit code, standard output and standard error."""
    from nas.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
