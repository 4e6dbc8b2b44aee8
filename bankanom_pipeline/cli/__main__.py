"""``python -m bankanom_pipeline.cli``: the ``bankanom`` command."""

from bankanom_pipeline.cli import app

app()
