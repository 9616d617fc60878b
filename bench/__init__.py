"""Benchmarks of the runtime against the PyTorch baseline: configurations (``configs``), the timed
run (``run``), the host record (``host``), the accuracy join (``accuracy``), the report
(``report``) and the FLOPs projection for real model sizes (``projection``). Torch-free except
the eager baseline, which lives beside the PyTorch engines in ``export/``."""
