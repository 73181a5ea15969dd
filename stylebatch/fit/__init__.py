"""The optimisation of one batch of pairs: the frozen VGG19, the losses, the LightningModule that holds
the target image, exact tiling, colour controls, the Trainer fit with its checkpoints, and the
provenance written into every output.

May import: memory, report, job, jobdir, images, atomic, errors, geometry. Not runner or cli.
"""
