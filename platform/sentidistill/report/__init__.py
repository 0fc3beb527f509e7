"""Reports: the evaluation table/chart and the whole-run HTML/markdown report."""
