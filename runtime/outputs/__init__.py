"""Where results go: the paths a run writes, planned and checked against its inputs (plan.py), and
annotated images and videos, JSON Lines, a window (sinks.py)."""
