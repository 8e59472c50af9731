"""Valuemail: an email-newsletter value campaign engine."""

__version__ = "0.1.0"
