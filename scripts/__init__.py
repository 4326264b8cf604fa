"""Developer scripts of the repository (not shipped in the image); generate.py is `make generate`."""
