"""The FastAPI service and the review web pages."""
