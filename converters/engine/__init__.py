"""The conversion engine: the format contract, the one read/write pipeline, and what they share."""
