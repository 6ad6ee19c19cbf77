"""Where results go: annotated images and videos, JSON Lines, a window (sinks.py)."""
