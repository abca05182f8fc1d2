"""Place one outbound call: normalise the number, prepare the greeting, ask Exotel to dial,
and store the lead and campaign against the returned Sid before the call is answered.

The media socket's `start` (whichever worker process takes it) finds them by call_sid in the
store; the CustomField and the stream's custom parameters are the fallbacks. Once Exotel has
accepted the dial the phone rings whatever the database does, so the record goes through
`DurableRecords`: a database that doesn't take it in a few seconds gets it from the journal.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from loguru import logger

from bot.config.campaigns import Campaign
from bot.config.lead_limits import check_lead
from bot.config.phone import mask_phone
from bot.config.settings import Settings
from bot.exotel.callback_refs import custom_field
from bot.exotel.client import ExotelClient
from bot.exotel.signing import sign
from bot.store.durable import DurableRecords, RecordNotSaved
from pipelines.speech_cache import SpeechCache


def exotel_client_for(settings: Settings) -> ExotelClient:
    """The REST client for the configured account (call `settings.require_exotel()` first)."""
    assert settings.exotel_api_token is not None
    return ExotelClient(
        str(settings.exotel_account_sid), str(settings.exotel_api_key),
        settings.exotel_api_token.get_secret_value(), base_url=str(settings.exotel_api_base_url),
    )


class DialTooLate(Exception):
    """Nothing was sent: the request could not leave by its `send_by` time (a campaign's dial
    grant counts the minute from the grant, so a late request could break Exotel's limit)."""


@dataclass
class DialResult:
    call_sid: str
    to: str
    status: str


class Dialer:
    """Places calls for one server or CLI process."""

    def __init__(self, settings: Settings, records: DurableRecords, client: ExotelClient, cache: SpeechCache,
                 signing_key: bytes, background: set[asyncio.Task] | None = None):
        self._settings = settings
        self._records = records
        self._client = client
        self._cache = cache
        self._key = signing_key
        self._background = background if background is not None else set()

    def status_callback_url(self, ref: str) -> str:
        base = self._settings.public_base_url
        return f"{base}/webhooks/exotel/call-status?ref={ref}&sig={sign(self._key, 'status', ref)}"

    async def dial(self, to: str, campaign: Campaign, lead: dict[str, Any], attempt: int = 1, *,
                   send_by: float | None = None) -> DialResult:
        """Ask Exotel to call `to` into the flow; raises LeadError / InvalidPhoneNumber (before
        anything is sent) or ExotelError. `send_by` (the loop's clock): DialTooLate instead of
        a request that would leave after it."""
        lead = check_lead(lead)
        number = campaign.phones.normalize(to)
        lead = {**lead, "phone": number}
        from pipelines.voices import prepare_greeting_soon  # Pipecat: only once something is dialled

        prepare_greeting_soon(self._cache, campaign, self._settings, lead, self._background)
        ref = uuid.uuid4().hex[:12]
        if send_by is not None and asyncio.get_running_loop().time() > send_by:
            raise DialTooLate(f"the dial request could not leave in time (attempt {attempt})")
        placed = await self._client.place_call(
            to=number,
            caller_id=str(self._settings.exotel_caller_id),
            app_id=str(self._settings.exotel_app_id),
            status_callback=self.status_callback_url(ref),
            custom_field=custom_field(campaign.name, lead, ref),
            time_limit=int(min(campaign.max_call_secs + 60, 14400)),
            time_out=45,
            record=campaign.record,  # Exotel keeps its own recording too (RecordingUrl)
            send_by=send_by,
        )
        log = logger.bind(call_sid=placed.sid)
        try:
            await self._records.record_dialled(
                placed.sid, campaign.name, lead, number, custom_field(campaign.name, lead, ref), attempt,
                from_number=self._settings.exotel_caller_id, status=placed.normalized_status or "initiated",
            )
        except RecordNotSaved as error:  # the call rings anyway; its stream creates the record
            log.error(f"the dialled call has no record yet: {error}")
        log.info(
            f"dialled {mask_phone(number)} for campaign {campaign.name} (attempt {attempt})"
        )
        return DialResult(placed.sid, number, placed.normalized_status or "initiated")

