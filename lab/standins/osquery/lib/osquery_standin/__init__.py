"""osquery STAND-IN for the fleetkit lab: the osqueryi/osqueryd CLI over real host facts."""
