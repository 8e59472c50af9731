"""Sending: the delivery ledger, composing messages, the worker threads and the send service."""
