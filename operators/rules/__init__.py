"""Rules on the window stream: evaluation, the alert lifecycle and what they emit.

Pure logic only (no I/O): the records in :mod:`operators.rules.alerts` are what the
rules produce; delivery is a connector.
"""
