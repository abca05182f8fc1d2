"""The dynamic URL for the Voicebot applet: Exotel GETs it and connects to the `url` it returns.

Configure the applet with the signed address `bot applet-url` prints
(`https://HOST/exotel/connect?sig=...`); requests without the signature are refused.
Exotel passes the CallSid; the dialled call's campaign and lead are looked up by it, and the
personalised greeting starts synthesizing now, so it's ready when the stream starts. Up to 3
query parameters (256 characters in all) on the stream URL reach the bot as
`start.custom_parameters`; campaign and lead ride there as the fallback to the store.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from loguru import logger

from bot.config.campaigns import CampaignError
from bot.exotel.applet import applet_signature_ok, media_url
from bot.server.services import Services, services
from pipelines.voices import prepare_greeting_soon

router = APIRouter(tags=["exotel"])


@router.api_route("/exotel/connect", methods=["GET", "POST"])
@router.api_route("/api/v1/exotel/voice/connect", methods=["GET", "POST"], include_in_schema=False)
async def exotel_connect(request: Request, state: Services = Depends(services)) -> dict[str, str]:
    """`{"url": "wss://PUBLIC_HOST/media?campaign=...&lead=..."}` for the Voicebot applet."""
    query = request.query_params
    if not applet_signature_ok(state.signing_key, query.get("sig")):
        logger.warning("dynamic URL request refused: missing or wrong signature")
        raise HTTPException(status_code=403, detail="bad signature")
    call_sid = query.get("CallSid") or query.get("call_sid")
    campaign_name, lead = query.get("campaign"), {}
    if query.get("name"):
        lead["name"] = query["name"]
    if call_sid and state.records is not None:
        found = await state.records.find_lead(call_sid)  # bounded: the query's values are the fallback
        if found:
            campaign_name, lead = found[0] or campaign_name, dict(found[1] or {})
    params = {k: v for k, v in (("campaign", campaign_name), ("lead", str(lead.get("id") or "")),
                                ("name", str(lead.get("name") or ""))) if v}
    try:
        campaign = state.campaigns.get(campaign_name, state.settings.default_campaign)
    except CampaignError:
        campaign = None  # the media socket refuses the call with the reason
    if campaign is not None:
        prepare_greeting_soon(state.speech_cache, campaign, state.settings, lead, state.background)
    return {"url": media_url(state.settings, params)}
