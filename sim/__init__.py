"""Simulator package (arrives with the simulator issue)."""
