"""stylebatch.memory."""
