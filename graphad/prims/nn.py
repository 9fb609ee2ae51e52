"""Neural-network primitives (conv2d)."""
