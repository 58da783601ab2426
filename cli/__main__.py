"""``python -m audioid.cli`` runs the same command line as the ``audioid`` script."""
from .main import cli

cli(prog_name="audioid")
