"""Worker services: the runtime and one module per worker (data, image, launch, release)."""
