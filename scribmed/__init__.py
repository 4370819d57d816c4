"""scribmed."""
