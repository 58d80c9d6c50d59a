"""Inputs in: table validation and the options object."""
