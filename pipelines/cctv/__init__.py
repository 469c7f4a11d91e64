"""Automatic CCTV monitoring: camera readers, one batched detector, per-camera rules, cases, health.

`pipelines.cctv.service.Watcher` runs it; `streetwatch watch --cameras cameras.yaml` is its
command. See docs/cctv.md.
"""
