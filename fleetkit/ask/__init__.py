"""The fleet-asking engine: a typed scope, transports, and one immutable answer."""
