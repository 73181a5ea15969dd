"""stylebatch.job."""
