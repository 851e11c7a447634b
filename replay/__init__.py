"""Forensics from the log alone: past projections, session timelines, integrity, exports."""
