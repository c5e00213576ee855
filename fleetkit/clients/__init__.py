"""Transports and clients: SSH (pinned keys, fan-out), the Bacalhau REST API, S3."""
