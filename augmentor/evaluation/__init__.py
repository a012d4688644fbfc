"""Table 1: scoring hallucinations against the originals (``evaluate``), the metrics, the classical baselines and the
report."""
