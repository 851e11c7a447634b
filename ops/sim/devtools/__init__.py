"""Developer scripts that regenerate data files of the simulator (not imported at run time)."""
