"""imserver: the XMPP component of a referral-and-commission network."""

__version__ = "0.1.0"
