"""stylebatch: Gatys et al. (2016) neural style transfer for many content/style pairs at once,
on PyTorch Lightning, with checkpointed, resumable progress."""

__version__ = "0.1.0"
