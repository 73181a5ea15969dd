"""The job's results as pages: a grid of outputs (contents down, styles across), cached thumbnails
and contact sheets, loss curves, the live report a running job rewrites, and status's rows.

May import: job, jobdir, images, atomic, errors, geometry. Never torch or Lightning (`report` and
`status` start in a fraction of a second).
"""
