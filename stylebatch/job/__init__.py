"""What the user asked for, before any work: settings (`Config`, presets, `--set`), the manifest
loaded into `Job` and `Pair` records with every problem collected, the weights setting checked, and
the resolved job file (job.json).

May import: jobdir, images, atomic, errors, geometry. No torch: `validate`'s checks and `status` start quickly.
"""
