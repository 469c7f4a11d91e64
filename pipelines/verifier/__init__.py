"""Training and evaluation of the verifier heads (detect.verifier) from labelled street photos."""
