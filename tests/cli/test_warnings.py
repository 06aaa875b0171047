"""A warning on the command line is one line, `warning: ...`, as the toolkit's own read: not
Python's file, line number and source line, which speak to a programmer."""

from __future__ import annotations

import warnings

import toolkit.cli.components
from toolkit.cli import main


def test_a_warning_is_one_line_and_python_shows_warnings_as_before(capsys, monkeypatch):
    def warns(args):
        warnings.warn("token cache x is damaged;\n  tokenizing the corpus again", stacklevel=1)
        return 0

    monkeypatch.setattr(toolkit.cli.components, "cmd_list", warns)
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["list"]) == 0
    assert capsys.readouterr().err == (
        "warning: token cache x is damaged; tokenizing the corpus again\n"
    )
    assert warnings.showwarning is shown
