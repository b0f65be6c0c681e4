"""Fabrication: error models of real devices, measured PSFs and captures."""
