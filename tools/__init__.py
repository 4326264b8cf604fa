"""Developer tools of the repository (not shipped in the image): `make generate`."""
