"""The job directory on disk (`OUTPUT/.stylebatch/`): per-pair records with atomic updates and locks
(`JobState`, the owner of every path under it), the claims that keep two workers off one pair, and
the loss curves.

May import: images, atomic, errors, geometry. No torch.
"""
