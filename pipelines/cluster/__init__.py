"""Past one machine: photo triage and CCTV monitoring on a Ray cluster (`--ray ADDRESS|local`).

Ray is an optional extra (`pip install 'streetwatch[ray]'`) and is imported only here and only
when a command is given `--ray`; single-machine runs never load it. Modules: `connect` (joining
or starting a cluster, loopback by default, and the shared-store check), `triage` (the per-photo
steps of `pipelines.triage` in warm actors that outlive a run), `watch` (cameras spread over owner actors,
shared inference actors, restarts from saved rules states), `metrics` (Prometheus samples of
every node in one scrape). Deployment: docs/scale-out.md.
"""
