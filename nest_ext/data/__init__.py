"""nest_ext.data."""
