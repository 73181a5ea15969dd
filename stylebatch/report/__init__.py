"""stylebatch.report."""
