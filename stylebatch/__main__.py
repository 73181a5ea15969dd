"""`python -m stylebatch`: the same command line as the `stylebatch` script."""

from stylebatch.cli.main import entry_point

entry_point()
