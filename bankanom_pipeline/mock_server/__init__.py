"""The live mock log server (predecessor-compatible control API)."""
