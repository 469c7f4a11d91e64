"""The jobs that drive `detect/` over sources and sinks: CCTV monitoring, photo triage, retraining, case store, evidence storage and dispatch. Never imports `api`."""
