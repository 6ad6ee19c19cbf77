"""Real TensorRT Python modules (PyPI wheels) imported against stub libraries, for API conformance."""
