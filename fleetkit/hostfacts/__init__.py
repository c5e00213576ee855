"""Host facts and changes (pyinfra-style): what a host looks like, and what to change."""
