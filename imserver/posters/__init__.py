"""Printable invites: the QR code of an invite URI (PNG, SVG) and a poster (PNG, PDF)
with the member's name, the QR code, the URI as text and instructions in Chinese and
English. Pure rendering to bytes; the one thing read from disk is a CJK font."""
