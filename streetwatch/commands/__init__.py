"""One module per top-level command group; each exposes `register(app)`.

Heavy imports (torch, ultralytics, onnxruntime, fastapi) stay inside the command functions so
that `streetwatch --help` is instant and a torch-free install can run the ONNX commands.
"""
