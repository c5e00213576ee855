"""LAB STAND-IN for the Bacalhau v1.9 ``bacalhau`` binary (not the real Bacalhau).

Packed by ``lab/standins/bacalhau/build.py`` into a zipapp named ``bacalhau``
inside ``bacalhau_<version>_linux_<arch>.tar.gz``. Runs under /usr/bin/python3
with the standard library and PyYAML only. fleetkit never imports it.
"""
