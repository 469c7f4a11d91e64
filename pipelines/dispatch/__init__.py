"""Delivery of queued cases to dispatch systems (cn-dcm JSON, Open311 GeoReport v2), status feedback, simulator.

Import from the module that holds what you need (`adapters`, `config`, `dispatcher`, `webhook`, ...): the package
imports nothing itself, so that the settings (`config.DispatchConfig`), which every command loads, do not load httpx
and the evidence signing code with the adapters and the dispatcher.
"""
