"""Retraining for the data team (docs/retraining.md).

Small modules, one step each: `dataset` (versions and manifests), `importers`, `check`, `stats`,
`split`, `merge`, `from_cases`, `train`, `evaluate`, `promote`, and `loop` (the whole chain).
Training, validation and export reuse Ultralytics' trainer, validator and exporter.
"""
