"""nest_ext.losses."""
