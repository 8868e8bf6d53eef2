"""Online serving: contract-driven request schemas (schemas.py, no Ray) and the Ray Serve app
(app.py: build_app, deploy). Nothing is imported here so `schemas` stays importable without Ray."""
