"""Stages: each module exposes `run(cfg, ...) -> Manifest`; stages talk only through artifacts."""
