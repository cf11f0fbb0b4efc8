"""The studies a command runs on the engine: a sweep, the base-width search (tune-base), verify."""
