"""pet: see the modules of this package."""
