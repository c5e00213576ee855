"""The Bacalhau v1.9 stand-in of the lab: ``build.build_tarball`` packs it."""
