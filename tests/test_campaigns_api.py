"""The campaign HTTP routes against the real server and the fake Exotel REST API (SQLite: the
route starts a job worker in the server process): POST /campaigns (a leads CSV and options),
GET /campaigns/{id}, POST /campaigns/{id}/pause|resume|cancel."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bot.server.routers import campaigns as campaign_routes
from testing.dialling import dialling_server

ALL_DAY = "00:00-23:59:59"
HEADER = "id,name,phone,timezone\n"


def leads_csv(rows: list[str]) -> bytes:
    return (HEADER + "\n".join(rows) + "\n").encode()


def numbers(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(count)]


def rows_of(phones: list[str]) -> list[str]:
    return [f"L{i},Lead {i},{phone},Asia/Kolkata" for i, phone in enumerate(phones)]


def form(**fields: Any) -> dict[str, str]:
    """The form fields of an upload: fast dialling at any hour unless overridden."""
    base: dict[str, Any] = {"campaign": "real_estate", "concurrency": 3, "calls_per_minute": 200, "window": ALL_DAY,
                            "timezone": "Asia/Kolkata", "max_attempts": 1, "retry_delay_secs": 0}
    base.update(fields)
    return {key: str(value) for key, value in base.items() if value is not None}


async def upload(client: httpx.AsyncClient, content: bytes, *, headers: dict[str, str] | None = None,
                 filename: str = "leads.csv", **fields: Any) -> httpx.Response:
    return await client.post("/campaigns", files={"leads": (filename, content, "text/csv")}, data=form(**fields),
                             headers=headers)


def runs_stored(tmp_path: Path) -> int:
    """Every campaign run in the server's database, finished or not."""
    with sqlite3.connect(tmp_path / "data" / "calls.db") as db:
        return db.execute("select count(*) from campaign_runs").fetchone()[0]


def leads_stored(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "calls.db") as db:
        return db.execute("select count(*) from campaign_leads").fetchone()[0]


async def until_progress(client: httpx.AsyncClient, run_id: str, done: Any, *, headers: dict[str, str] | None = None,
                         timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every GET /campaigns/{id} body up to the first that satisfies `done`."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get(f"/campaigns/{run_id}", headers=headers)
            assert response.status_code == 200, response.text
            seen.append(response.json())
            if done(seen[-1]):
                return seen
            await asyncio.sleep(0.1)


async def until_dialled(exotel: Any, count: int, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while len(exotel.calls) < count:
            await asyncio.sleep(0.05)


async def test_an_upload_is_dialled_to_the_end_and_its_bad_row_reported(tmp_path):
    good = numbers("98765400", 5)
    rows = rows_of(good)
    rows.insert(3, "BAD,Bad Row,12345,Asia/Kolkata")  # data row 4: line 5 of the file
    async with dialling_server(tmp_path, "answered") as (server, exotel), \
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        response = await upload(client, leads_csv(rows))
        assert response.status_code == 201, response.text
        started = response.json()
        seen = await until_progress(client, started["run_id"], lambda body: body["finished"])
        await exotel.drain()
    assert started["campaign"] == "real_estate" and started["added"] == 5 and started["resumed"] is False
    assert len(started["run_id"]) == 32
    assert [bad["line"] for bad in started["bad_rows"]] == [5]
    assert "12345" in started["bad_rows"][0]["reason"]
    first, last = seen[0], seen[-1]
    assert first["run_id"] == started["run_id"] and first["total"] == 5
    assert first["finished"] is False, "a run of five calls cannot have ended before the first look"
    assert last["state"] == "running" and last["total"] == 5
    assert last["counts"]["done"] == 5, last
    assert sum(last["counts"].values()) == 5 and last["to_reconcile"] == 0
    assert last["outcomes"] and sum(last["outcomes"].values()) == 5, last
    dialled = Counter(call.form["From"] for call in exotel.calls)
    assert dialled == Counter({"+91" + number: 1 for number in good}), dialled


async def test_every_bad_upload_is_refused_before_a_run_is_stored(tmp_path, monkeypatch):
    good = leads_csv(rows_of(numbers("98765410", 3)))
    async with dialling_server(tmp_path, "answered") as (server, exotel), \
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:

        async def expect(name: str, status: int, content: bytes = good, **fields: Any) -> None:
            response = await upload(client, content, **fields)
            assert response.status_code == status, (name, response.text)
            assert response.json().get("detail"), (name, response.text)

        await expect("unknown campaign", 404, campaign="no_such_campaign")
        await expect("campaign as a path", 404, campaign="../configs/real_estate")
        await expect("campaign as a file", 404, campaign="real_estate.yaml")
        await expect("window text", 422, window="morning")
        await expect("window without an end", 422, window="10:00")
        await expect("window backwards", 422, window="19:00-10:00")
        await expect("concurrency 0", 422, concurrency=0)
        await expect("calls per minute 201", 422, calls_per_minute=201)
        await expect("max attempts 0", 422, max_attempts=0)
        await expect("negative retry delay", 422, retry_delay_secs=-1)
        await expect("unknown time zone", 422, timezone="Mars/Olympus")
        await expect("time zone as a path", 422, timezone="../../etc/passwd")
        await expect("no phone column", 422, b"id,name\n1,Asha\n2,Bala\n")
        await expect("empty file", 422, b"")
        await expect("not UTF-8", 422, "id,name,phone\n1,Jos\u00e9,9876541000\n".encode("latin-1"))
        await expect("NUL bytes in every row", 422, b"id,name,phone\n1,A\x00sha,9876541000\n2,B\x00,9876541001\n")
        await expect("a NUL byte in the header", 422, b"id,na\x00me,phone\n1,Asha,9876541000\n")
        await expect("a field over the csv limit", 422, b"id,name,phone\n1," + b"a" * 200_000 + b",9876541000\n")
        await expect("only bad rows", 422, leads_csv(["A,Asha,12345,", "B,Bala,not a number,"]))
        monkeypatch.setattr(campaign_routes, "MAX_LEADS_FILE_BYTES", len(good) - 1)
        await expect("over the size limit", 413, good)
        await asyncio.sleep(0.5)  # anything started by mistake would have dialled by now
        unfinished = await server.app.state.services.store.unfinished_runs()
        stored = runs_stored(tmp_path), leads_stored(tmp_path)
        dialled = list(exotel.calls)
        jobs_when_refused = server.app.state.services.jobs
        monkeypatch.setattr(campaign_routes, "MAX_LEADS_FILE_BYTES", len(good))
        accepted = await upload(client, good)  # just at the limit: taken (the limit is not off by one)
        assert accepted.status_code == 201, accepted.text
        assert (await client.post(f"/campaigns/{accepted.json()['run_id']}/cancel")).status_code == 200
    assert unfinished == [] and stored == (0, 0), "a refused upload stored a run or leads"
    assert dialled == [], "a refused upload dialled"
    assert jobs_when_refused is None, "a refused upload started the campaign job worker"
    assert runs_stored(tmp_path) == 1


async def test_a_body_over_the_route_limit_is_refused(tmp_path):
    """An upload over the real limits (MAX_BODY_BYTES and MAX_LEADS_FILE_BYTES, unpatched): 413."""
    big = HEADER.encode() + b"x" * (campaign_routes.MAX_BODY_BYTES + 1024)
    async with dialling_server(tmp_path, "answered") as (server, exotel), \
            httpx.AsyncClient(base_url=server.http_url, timeout=60) as client:
        response = await upload(client, big)
    assert response.status_code == 413, response.text[:300]
    assert runs_stored(tmp_path) == 0 and exotel.calls == []


async def test_pause_resume_cancel_and_unknown_runs(tmp_path):
    phones = numbers("98765430", 4)
    async with dialling_server(tmp_path, "answered") as (server, exotel), \
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        # one dial a minute: one lead is called, the others wait, so the run stays unfinished
        response = await upload(client, leads_csv(rows_of(phones)), calls_per_minute=1)
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
        await until_dialled(exotel, 1)

        async def act(action: str, run: str = run_id) -> httpx.Response:
            return await client.post(f"/campaigns/{run}/{action}")

        paused = await act("pause")
        assert (paused.status_code, paused.json()) == (200, {"run_id": run_id, "state": "paused"})
        again = await act("pause")
        assert again.status_code == 409 and "paused" in again.json()["detail"], again.text
        assert (await client.get(f"/campaigns/{run_id}")).json()["state"] == "paused"
        resumed = await act("resume")
        assert (resumed.status_code, resumed.json()) == (200, {"run_id": run_id, "state": "running"})
        assert (await act("resume")).status_code == 409, "resuming a running run"
        unknown_action = await act("stop")
        assert unknown_action.status_code == 404, unknown_action.text
        assert (await client.get(f"/campaigns/{run_id}")).json()["state"] == "running"
        cancelled = await act("cancel")
        assert (cancelled.status_code, cancelled.json()) == (200, {"run_id": run_id, "state": "cancelled"})
        cancelled_again = await act("cancel")
        assert cancelled_again.status_code == 409 and "cancelled" in cancelled_again.json()["detail"]
        assert (await act("resume")).status_code == 409, "resuming a cancelled run"
        assert (await act("pause")).status_code == 409, "pausing a cancelled run"
        seen = await until_progress(client, run_id, lambda body: body["finished"])

        missing = uuid.uuid4().hex
        statuses = {
            "GET unknown": (await client.get(f"/campaigns/{missing}")).status_code,
            "pause unknown": (await act("pause", missing)).status_code,
            "cancel unknown": (await act("cancel", missing)).status_code,
            "GET malformed": (await client.get("/campaigns/not-a-run")).status_code,
            "GET upper case": (await client.get(f"/campaigns/{run_id.upper()}")).status_code,
            "pause malformed": (await act("pause", "1234")).status_code,
            "resume malformed": (await act("resume", run_id + "0")).status_code,
            "unknown action, unknown run": (await act("stop", missing)).status_code,
        }
        await exotel.drain()
    last = seen[-1]
    assert last["state"] == "cancelled" and last["total"] == 4
    assert last["counts"]["skipped"] == 3 and last["counts"]["done"] == 1, last
    assert last["outcomes"].get("cancelled") == 3, last
    dialled = [call.form["From"] for call in exotel.calls]  # whichever lead's job claimed the minute's dial
    assert len(dialled) == 1 and dialled[0] in {"+91" + phone for phone in phones}, "a lead was dialled after cancel"
    assert statuses == {name: 404 for name in statuses}, statuses


async def test_with_an_api_token_nothing_happens_without_it(tmp_path):
    token = "s3cret-token"
    content = leads_csv(rows_of(numbers("98765440", 2)))
    async with dialling_server(tmp_path, "answered", settings_overrides={"api_token": token}) as (server, exotel), \
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        missing = uuid.uuid4().hex
        denied = {
            "upload, no token": (await upload(client, content)).status_code,
            "upload, wrong token": (await upload(client, content, headers={"Authorization": "Bearer nope"})).status_code,
            "upload, not bearer": (await upload(client, content, headers={"Authorization": token})).status_code,
            "upload, bad form, no token": (await upload(client, content, campaign="nope")).status_code,
            "GET, no token": (await client.get(f"/campaigns/{missing}")).status_code,
            "pause, no token": (await client.post(f"/campaigns/{missing}/pause")).status_code,
        }
        await asyncio.sleep(0.5)
        stored_when_denied = runs_stored(tmp_path)
        jobs_when_denied = server.app.state.services.jobs
        calls_when_denied = len(exotel.calls)
        auth = {"Authorization": f"Bearer {token}"}
        allowed = await upload(client, content, headers=auth)
        assert allowed.status_code == 201, allowed.text
        run_id = allowed.json()["run_id"]
        unauthorised_cancel = await client.post(f"/campaigns/{run_id}/cancel")
        unauthorised_get = await client.get(f"/campaigns/{run_id}")
        seen = await until_progress(client, run_id, lambda body: body["finished"], headers=auth)
        await exotel.drain()
    assert denied == {name: 401 for name in denied}, denied
    assert stored_when_denied == 0 and calls_when_denied == 0 and jobs_when_denied is None
    assert unauthorised_cancel.status_code == 401 and unauthorised_get.status_code == 401
    assert seen[-1]["state"] == "running" and seen[-1]["counts"]["done"] == 2, seen[-1]


async def test_the_same_file_again_resumes_its_unfinished_run(tmp_path):
    phones = numbers("98765450", 3)
    content = leads_csv(rows_of(phones))
    async with dialling_server(tmp_path, "answered") as (server, exotel), \
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        first = await upload(client, content, calls_per_minute=1)
        assert first.status_code == 201, first.text
        run_id = first.json()["run_id"]
        await until_dialled(exotel, 1)
        again = await upload(client, content, calls_per_minute=1)
        assert (await client.post(f"/campaigns/{run_id}/pause")).status_code == 200
        after_pause = await upload(client, content, calls_per_minute=1)
        state_after = (await client.get(f"/campaigns/{run_id}")).json()["state"]
        other_campaign = await upload(client, content, campaign="hinglish_followup", calls_per_minute=1)
        other_file = await upload(client, leads_csv(rows_of(phones[:2])), calls_per_minute=1)
        for response in (other_campaign, other_file):  # both wait a minute for their next dial: stop them
            assert response.status_code == 201, response.text
            assert (await client.post(f"/campaigns/{response.json()['run_id']}/cancel")).status_code == 200
        assert (await client.post(f"/campaigns/{run_id}/cancel")).status_code == 200
        await exotel.drain()
    assert first.json()["resumed"] is False and first.json()["added"] == 3
    for response in (again, after_pause):
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["run_id"], body["resumed"], body["added"], body["bad_rows"]) == (run_id, True, 0, []), body
    assert state_after == "running", "uploading the file of a paused run resumes it"
    assert other_campaign.json()["run_id"] != run_id and other_campaign.json()["resumed"] is False
    assert other_file.json()["run_id"] not in (run_id, other_campaign.json()["run_id"])
    assert other_file.json()["resumed"] is False and other_file.json()["added"] == 2
    assert runs_stored(tmp_path) == 3
