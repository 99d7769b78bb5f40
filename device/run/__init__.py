"""`kestrel run`: the daemon, per-camera workers, cascade stages, motion gating, smoothing."""
