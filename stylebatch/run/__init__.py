"""stylebatch.run."""
