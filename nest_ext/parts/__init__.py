"""nest_ext.parts."""
