"""The broker: HTTP API, offers (planner and calendar), session state and store."""
