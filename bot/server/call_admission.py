"""Whether a media socket's call is served, and with which campaign and lead: a dialled
call's campaign and lead come from its record (the socket's custom parameters are only the
fallback), and a call whose record is already final is never served again."""

from __future__ import annotations

from loguru import logger

from bot.config.campaigns import Campaign, CampaignError
from bot.server.services import Services
from pipelines.call_session import CallSession


async def admit_call(state: Services, session: CallSession, had_start: bool) -> Campaign | None:
    """The call's campaign, with the dialled lead filled in from the store; None (logged) when
    the call must not be served: it already ended (its record is final), or no campaign fits."""
    log = logger.bind(call_sid=session.call_sid)
    if state.records is not None:  # a dialled call: its campaign and lead were stored against the Sid
        known = await state.records.call_for_media(session.call_sid)  # None (in time): the custom parameters
        if known is not None and known.ended:
            log.warning("media socket refused: this call has ended; its record stays as it is")
            return None
        if known is not None:
            session.campaign = known.campaign or session.campaign
            session.lead = {**session.lead, **known.lead}
    try:
        campaign = state.campaigns.get(session.campaign, state.settings.default_campaign)
    except CampaignError as error:
        log.error(f"call refused: {error}")
        return None
    session.campaign = campaign.name
    log.info(
        f"call started: campaign={campaign.name} rate={session.sample_rate} "
        f"start={'yes' if had_start else 'no (media first)'}"
    )
    return campaign
