"""Kept for ``requests/membership.py`` until it declares its routes: the writers of
``<member/>`` and ``<chain/>`` live in :mod:`imserver.xmpp.payloads` with the others."""

from imserver.xmpp.payloads import fill_chain, fill_member

__all__ = ["fill_chain", "fill_member"]
