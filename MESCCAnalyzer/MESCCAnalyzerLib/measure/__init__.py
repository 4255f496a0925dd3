"""measure: see the modules of this package."""
