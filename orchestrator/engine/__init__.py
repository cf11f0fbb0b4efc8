"""The run engine: one session per command (lock, Ray, signals), trials in packs on Ray Tune, plans."""
