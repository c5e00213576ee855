"""The osquery stand-in: a real ``.deb`` with the official layout and a Python ``osqueryd``."""
