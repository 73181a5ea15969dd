from stylebatch.cli import entry_point

entry_point()
