"""The runtime: compiled executables, their caches, jit and AOT artifacts (TVM imported lazily)."""
