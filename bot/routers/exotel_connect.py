"""The dynamic URL for the Voicebot applet: Exotel GETs it and connects to the `url` it returns.

Up to 3 query parameters (256 characters in all) on the stream URL reach the bot as
`start.custom_parameters`, so campaign and lead ride there. The outbound-dialing issue adds
the per-CallSid lookup and a secret; this answers with what the request itself carries.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Request

router = APIRouter(tags=["exotel"])
PASSED_THROUGH = ("campaign", "lead", "name")


def media_url(request: Request) -> str:
    settings = request.app.state.settings
    base = urlsplit(settings.public_base_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    auth = ""
    if settings.media_auth_enabled:
        auth = f"{quote(settings.media_auth_user, safe='')}:{quote(settings.media_auth_password, safe='')}@"
    params = {k: request.query_params[k] for k in PASSED_THROUGH if request.query_params.get(k)}
    if settings.exotel_sample_rate:
        params = {"sample-rate": str(settings.exotel_sample_rate), **params}
    query = urlencode(dict(list(params.items())[:3]))[:256]
    return f"{scheme}://{auth}{base.netloc}{base.path}/media" + (f"?{query}" if query else "")


@router.api_route("/exotel/connect", methods=["GET", "POST"])
async def exotel_connect(request: Request) -> dict[str, str]:
    """`{"url": "wss://PUBLIC_HOST/media?campaign=...&lead=..."}` for the Voicebot applet.

    Exotel asks for this before it opens the socket, so the personalised greeting starts
    synthesizing now and is ready (in the shared cache) when the stream starts.
    """
    _prepare_greeting(request)
    return {"url": media_url(request)}


def _prepare_greeting(request: Request) -> None:
    from bot.call_runner import prepare_line
    from bot.campaigns import CampaignError

    state = request.app.state
    settings = state.settings
    try:
        campaign = state.campaigns.get(request.query_params.get("campaign"), settings.default_campaign)
    except CampaignError:
        return
    lead = {"name": request.query_params["name"]} if request.query_params.get("name") else {}
    rate = settings.exotel_sample_rate or 8000
    task = asyncio.create_task(
        prepare_line(state.speech_cache, campaign, settings, campaign.render_greeting(lead), rate)
    )
    state.background.add(task)
    task.add_done_callback(state.background.discard)
