"""`python -m mnemoray` is the `mnemoray` command."""

from mnemoray.cli.main import app

app()
