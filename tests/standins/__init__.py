"""Stand-ins for external services that cannot run here, written from their published APIs."""
