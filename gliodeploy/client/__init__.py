"""Client side: read a PET scan, convert to SUV, preprocess, query Triton. Never imports torch."""
