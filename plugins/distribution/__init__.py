"""The distribution protocol as a slixmpp plugin: ``xmpp.register_plugin("distribution",
module=plugins.distribution)``, or call :func:`enable`."""

from plugins.distribution.plugin import XEP_Distribution, enable
from plugins.distribution.stanza import NS

__all__ = ["NS", "XEP_Distribution", "enable"]
