"""From pixels to violation events, with no servers.

Layers (see DESIGN.md §4): detector backends -> taxonomy-mapped observations -> tracking ->
rules -> violation events -> evidence bundles. Nothing here imports `pipelines` or `api`.
"""
