"""Running on a Ray cluster: what a config asks of the nodes, job submission, cost plans."""
