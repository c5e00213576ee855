"""The fleetkit lab: a local fleet of namespaced sshd hosts plus stand-in packages.

Used by the end-to-end tests (``tests/conftest.py``) and the quick start
(``invoke lab.up``). Never imported by the ``fleetkit`` package.
"""
