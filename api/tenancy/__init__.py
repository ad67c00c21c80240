"""Tenancy: team keys, their limits and usage, and the admin CLI and routes."""
