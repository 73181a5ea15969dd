"""stylebatch.cli."""
