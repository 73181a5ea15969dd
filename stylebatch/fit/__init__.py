"""stylebatch.fit."""
