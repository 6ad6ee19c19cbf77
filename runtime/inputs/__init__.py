"""Where frames come from: files, folders, cameras and streams (sources.py), and several live sources
read at once (streams.py)."""
