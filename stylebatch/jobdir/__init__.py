"""stylebatch.jobdir."""
