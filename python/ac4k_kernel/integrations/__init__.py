"""Integrations with model libraries; each is optional and imports its library lazily."""
