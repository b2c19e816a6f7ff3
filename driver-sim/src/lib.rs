//! A deterministic simulated network that runs Pilot's real protocol core.
