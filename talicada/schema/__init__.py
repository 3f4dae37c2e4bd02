"""The Talicada data model: kinds, dialects, ISO 8601 types, messages, validation."""
