"""Finding the calls Exotel placed to a number (Bulk Call Details), against the fake on loopback:
what `ExotelClient.find_calls` sends, what it finds and misses, its refusals, and the fake's
own filters and answer shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

import bot.exotel.client as client_module
from bot.exotel.client import ExotelClient
from bot.exotel.errors import AUTH_ERROR_MESSAGE, ExotelAuthError
from bot.simulator.exotel_rest import FakeExotelREST

CUSTOMER = "+919876543210"
OTHER = "+919812345678"
EXOPHONE = "08047181234"
IST = timezone(timedelta(hours=5, minutes=30))
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)  # Exotel's wire text for it: 2024-01-01 05:30:00 (IST)


def client_for(fake: FakeExotelREST, **kwargs) -> ExotelClient:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    api_token = kwargs.pop("api_token", fake.api_token)
    return ExotelClient(fake.account_sid, fake.api_key, api_token, base_url=fake.base_url, **kwargs)


async def place(client: ExotelClient, to: str = CUSTOMER):
    return await client.place_call(to=to, caller_id=EXOPHONE, app_id="654321", status_callback=None,
                                   custom_field=None, time_limit=None, time_out=None, record=False)


def created_at(date_created: str | None) -> datetime:
    """A Call's `DateCreated` (IST text, to the second) as an aware datetime."""
    assert date_created
    return datetime.strptime(date_created, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)


async def test_a_placed_call_is_found_by_its_number_since_before_it_was_placed():
    async with FakeExotelREST(outcomes="busy", ring_secs=0.01) as fake, client_for(fake) as client:
        placed = await place(client)
        await place(client, to=OTHER)

        found = await client.find_calls("98765 43210", LONG_AGO)

        assert [c.sid for c in found] == [placed.sid]
        assert (found[0].from_, found[0].to, found[0].direction) == ("09876543210", EXOPHONE, "outbound-api")
        assert found[0].date_created == placed.date_created
        # The wire: the customer is the call's From (rung first); times are IST; one bounded page.
        assert fake.searches[-1].query == {
            "From": CUSTOMER, "DateCreated": "gte:2024-01-01 05:30:00",
            "PageSize": "50", "SortBy": "DateCreated:desc",
        }
        assert fake.searches[-1].http_status == 200
        await fake.drain()


async def test_not_found_after_it_was_created_before_it_or_for_another_number():
    async with FakeExotelREST(outcomes="busy", ring_secs=0.01) as fake, client_for(fake) as client:
        placed = await place(client)
        when = created_at(placed.date_created)

        assert [c.sid for c in await client.find_calls(CUSTOMER, when, when)] == [placed.sid]  # inclusive
        assert await client.find_calls(CUSTOMER, when + timedelta(seconds=1)) == []
        assert await client.find_calls(CUSTOMER, LONG_AGO, when - timedelta(seconds=1)) == []
        assert await client.find_calls(OTHER, LONG_AGO) == []
        assert fake.searches[1].query["DateCreated"] == (
            f"gte:{(when + timedelta(seconds=1)).strftime('%Y-%m-%d %H:%M:%S')}"
        )
        await fake.drain()


async def test_sub_second_bounds_widen_to_whole_seconds():
    async with FakeExotelREST(outcomes="busy", ring_secs=0.01) as fake, client_for(fake) as client:
        placed = await place(client)
        when = created_at(placed.date_created)  # Exotel's DateCreated: to the second
        found = await client.find_calls(CUSTOMER, when + timedelta(milliseconds=400),
                                        when + timedelta(milliseconds=600))
        assert [c.sid for c in found] == [placed.sid]
        later = when + timedelta(seconds=1)
        assert fake.searches[-1].query["DateCreated"] == (
            f"gte:{when:%Y-%m-%d %H:%M:%S};lte:{later:%Y-%m-%d %H:%M:%S}"
        )
        await fake.drain()


@pytest.mark.parametrize(
    ("to", "after", "before"),
    [
        ("12345", LONG_AGO, None),
        ("", LONG_AGO, None),
        ("call me", LONG_AGO, None),
        (CUSTOMER, datetime(2024, 1, 1), None),  # naive
        (CUSTOMER, "2024-01-01 00:00:00", None),
        (CUSTOMER, None, None),
        (CUSTOMER, LONG_AGO, datetime(2024, 1, 2)),  # naive
        (CUSTOMER, LONG_AGO, LONG_AGO - timedelta(seconds=1)),  # before the start
    ],
)
async def test_bad_inputs_raise_value_error_before_any_request(to, after, before):
    async with FakeExotelREST() as fake, client_for(fake) as client:
        with pytest.raises(ValueError) as caught:
            await client.find_calls(to, after, before)
        assert "\n" not in str(caught.value)
        assert fake.searches == []


async def test_wrong_credentials_are_the_usual_auth_error_without_retry():
    async with FakeExotelREST() as fake, client_for(fake, api_token="wrong-token") as client:
        with pytest.raises(ExotelAuthError) as caught:
            await client.find_calls(CUSTOMER, LONG_AGO)
        assert str(caught.value) == AUTH_ERROR_MESSAGE and caught.value.status_code == 401
        assert "wrong-token" not in str(caught.value)
        assert [s.http_status for s in fake.searches] == [401]


async def test_a_failed_search_is_retried():
    async with FakeExotelREST(fail_first=[503, 429], retry_after=0) as fake, client_for(fake) as client:
        assert await client.find_calls(CUSTOMER, LONG_AGO) == []
        assert [s.http_status for s in fake.searches] == [503, 429, 200]


async def test_one_page_is_read_newest_first(monkeypatch):
    monkeypatch.setattr(client_module, "FIND_CALLS_PAGE_SIZE", 2)
    async with FakeExotelREST(outcomes="busy", ring_secs=0.01) as fake, client_for(fake) as client:
        sids = [(await place(client)).sid for _ in range(3)]
        found = await client.find_calls(CUSTOMER, LONG_AGO)
        assert [c.sid for c in found] == [sids[2], sids[1]]
        assert len(fake.searches) == 1 and fake.searches[0].query["PageSize"] == "2"
        await fake.drain()


async def test_the_fake_can_leave_out_ongoing_calls_as_exotel_documents():
    async with FakeExotelREST(outcomes=["busy", "answered"], ring_secs=0.01, hangup_after=60,
                              bulk_lists_ongoing=False) as fake, client_for(fake) as client:
        ended = await place(client)
        await fake.drain()
        ongoing = await place(client)
        assert ongoing.sid in fake.state and fake.state[ongoing.sid].status == "in-progress"
        assert [c.sid for c in await client.find_calls(CUSTOMER, LONG_AGO)] == [ended.sid]


# --------------------------------------------------------------------------- the fake's own wire


async def test_fake_answers_exotels_shape_and_pages_with_its_cursor():
    async with FakeExotelREST(outcomes="busy", ring_secs=0.01) as fake, client_for(fake) as client:
        sids = [(await place(client)).sid for _ in range(3)]
        await place(client, to=OTHER)
        auth = httpx.BasicAuth(fake.api_key, fake.api_token)
        async with httpx.AsyncClient(base_url=fake.base_url, auth=auth) as http:
            url = f"/v1/Accounts/{fake.account_sid}/Calls.json"
            first = (await http.get(url, params={"From": CUSTOMER, "PageSize": "2", "SortBy": "DateCreated:asc"})).json()
            assert set(first) == {"Metadata", "Calls"}
            assert first["Metadata"]["Total"] == 3 and first["Metadata"]["PageSize"] == 2
            assert first["Metadata"]["PrevPageUri"] is None
            assert [c["Sid"] for c in first["Calls"]] == sids[:2]
            assert set(first["Calls"][0]) >= {"Sid", "DateCreated", "To", "From", "Status", "Direction", "Uri"}
            second = (await http.get(first["Metadata"]["NextPageUri"])).json()
            assert [c["Sid"] for c in second["Calls"]] == sids[2:]
            assert second["Metadata"]["NextPageUri"] is None
            # Exotel's `To` of a call into a flow is the ExoPhone: the customer is not found there.
            by_to = (await http.get(url, params={"To": CUSTOMER})).json()
            assert by_to["Calls"] == [] and by_to["Metadata"]["Total"] == 0
            exophone = (await http.get(url, params={"To": "+918047181234"})).json()
            assert exophone["Metadata"]["Total"] == 4
        await fake.drain()


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"To": "9876543210"}, "'To'"),
        ({"From": ",".join([CUSTOMER] * 6)}, "'From'"),
        ({"DateCreated": "gte:2024-13-01 00:00:00"}, "'DateCreated'"),
        ({"DateCreated": "after:2024-01-01 00:00:00"}, "'DateCreated'"),
        ({"DateCreated": "gte:2024-01-01 00:00:00;gte:2024-01-02 00:00:00"}, "'DateCreated'"),
        ({"DateCreated": "gte:2024-01-01T00:00:00"}, "'DateCreated'"),
        ({"PageSize": "0"}, "'PageSize'"),
        ({"PageSize": "101"}, "'PageSize'"),
        ({"SortBy": "Price:asc"}, "'SortBy'"),
        ({"After": "nosuchcursor"}, "'After'"),
    ],
)
async def test_fake_refuses_bad_filters_with_a_rest_exception(params, names):
    async with FakeExotelREST() as fake:
        auth = httpx.BasicAuth(fake.api_key, fake.api_token)
        async with httpx.AsyncClient(base_url=fake.base_url, auth=auth) as http:
            response = await http.get(f"/v1/Accounts/{fake.account_sid}/Calls.json", params=params)
        assert response.status_code == 400
        error = response.json()["RestException"]
        assert error["Status"] == 400 and error["Code"] == 400 and names in error["Message"]
        assert [s.http_status for s in fake.searches] == [400]


async def test_fake_search_checks_auth_and_the_account():
    async with FakeExotelREST() as fake:
        async with httpx.AsyncClient(base_url=fake.base_url) as http:
            no_auth = await http.get(f"/v1/Accounts/{fake.account_sid}/Calls.json")
            other = await http.get("/v1/Accounts/someoneelse/Calls.json",
                                   auth=httpx.BasicAuth(fake.api_key, fake.api_token))
        assert no_auth.status_code == 401 and other.status_code == 401
        assert "RestException" in no_auth.json()
