"""nest_ext.modules."""
