"""nest_ext.models."""
