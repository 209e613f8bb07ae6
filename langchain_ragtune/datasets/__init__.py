"""Conversation datasets every room may read: LoCoMo's format and the sample shipped with
the package (:mod:`.locomo`). Pure and light: no store, no model.
"""
