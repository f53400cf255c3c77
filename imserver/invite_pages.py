"""Invite posters over HTTP: ``/invites/<code>.<png|pdf>`` on the component's HTTP server
(:mod:`imserver.httpd`), the links that the ``invite`` answer gives when ``[invites]
public_base_url`` names the operator's reverse proxy in front of it.

The page only translates: ``Invites.poster`` finds the member and draws; its refusals
become HTTP statuses with their text, which says what was wrong.
"""

from __future__ import annotations

from imserver.httpd import LoopbackServer, Request, Response
from imserver.posters.fonts import FontMissing
from imserver.service.errors import ServiceError
from imserver.service.invites import Invites
from imserver.store.db import Unavailable

PREFIX = "/invites/"
# An unknown code or format: 404; an ended member's invite: 410 (it existed, it is gone).
STATUS = {"item-not-found": 404, "not-acceptable": 410, "bad-request": 400}
# A poster changes only when its member does (ends, or changes its name): a few minutes
# of caching spare the drawing when a poster is shared.
CACHE = (("Cache-Control", "public, max-age=300"),)


class PosterPages:
    """The ``/invites/`` route of one component."""

    def __init__(self, invites: Invites) -> None:
        self.invites = invites

    def install(self, server: LoopbackServer) -> None:
        """Serve every path under ``/invites/``."""
        server.route(PREFIX, self.page)

    async def page(self, request: Request) -> Response:
        """The poster named by the path, or why there is none."""
        name = request.path[len(PREFIX) :]
        try:
            content_type, body = await self.invites.poster(name)
        except ServiceError as exc:
            return Response(f"{exc.text}\n".encode(), STATUS.get(exc.condition, 500))
        except FontMissing as exc:
            return Response(f"posters are not available here: {exc}\n".encode(), 503)
        except Unavailable:
            text = b"the service is briefly unavailable; try again in a minute\n"
            return Response(text, 503, headers=(("Retry-After", "60"),))
        return Response(body, content_type=content_type, headers=CACHE)
