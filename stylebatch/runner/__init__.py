"""Running a job: workers (Lightning Fabric or a cluster launcher), the plan made once on rank 0,
batches handed to the fit, each pair's records kept through its life (begun, done, failed,
interrupted), and the options a run takes.

May import: fit, memory, report, job, jobdir, images, atomic, errors, geometry. Not cli.
"""
