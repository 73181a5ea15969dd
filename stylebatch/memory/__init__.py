"""How much memory and time a pair needs: the pure model (estimate.py), this machine's measured
figures (calibration.py), `auto` settings resolved from them (autosize.py), the out-of-memory ladder
(ladder.py) and the measuring of finished runs (measure.py).

May import: job, jobdir, images, atomic, errors, geometry. Not fit, runner, report or cli.
"""
