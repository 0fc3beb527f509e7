"""Student training on Ray Train + DeepSpeed: data preparation, the one train loop, export.

`stages/train.py` wires these together; the pieces are separate so each can be tested alone:
`data` (tokenize, mask, pack), `deepspeed_config`, `loop` (runs on every worker), `export`.
"""
