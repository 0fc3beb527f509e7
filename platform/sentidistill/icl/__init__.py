"""ICLDist building blocks: prompt construction (`builder`), the test-set guard (`leakage`),
teacher-answer targets and QC (`targets`), manifest counts (`summary`). The stage is `stages/icl.py`."""
