"""Serving from the model registry: put a registered version in service without a restart
(activation.py) and lease it per request (deployment.py). The registry file itself is
``artifacts/registry.py``; no HTTP here."""
