"""The tracing front end: Python functions over tracer tensors become graphs."""
