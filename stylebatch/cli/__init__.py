"""The command line: argument parsing, the one place that prints (rich), exit codes, progress bars and
the status table. `main.py` maps each command to the wing that does it.

May import: every wing (it sits on top). Nothing imports it but the entry points.
"""
