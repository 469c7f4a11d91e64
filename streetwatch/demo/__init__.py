"""`streetwatch demo`'s parts: its footage (`media`, made with `benchmarks.media` from the photos inside
the ultralytics package) and its loopback stack (`stack`: settings file, dispatch simulator, service).

Demo code, not product code: nothing under `detect/`, `pipelines/` or `api/` imports it.
"""
