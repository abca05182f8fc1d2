"""Campaign runs on the job engine (in process, as on the embedded SQLite default): many leads
through the fake Exotel REST API and the real server, with retries, a calling window, a rate
limit, a do-not-call list, bad rows, pause/resume/cancel, and a worker stopped mid-run."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from bot.dialing.campaign_options import CampaignOptions, next_window_start
from bot.dialing.lead_files import read_dnc, read_leads
from testing.campaign_engine import campaign_engine, until_settled
from testing.dialling import dialling_server, write_csv


def fast_options(**overrides) -> CampaignOptions:
    base = dict(concurrency=5, calls_per_minute=200, window_start=time(0, 0), window_end=time(23, 59, 59),
                max_attempts=2, retry_delay_secs=0.3)
    base.update(overrides)
    return CampaignOptions(**base)


def campaign_of(server):
    return server.app.state.services.campaigns.get("real_estate", "real_estate")


async def test_campaign_of_twenty_with_busy_no_answer_and_retries(tmp_path):
    numbers = [f"98765{i:05d}" for i in range(20)]
    attempts: Counter = Counter()

    def outcome(number: str) -> str:
        attempts[number] += 1
        index = int(number[-5:])
        if index % 5 == 0:
            return "no-answer"  # never picks up: fails after 2 attempts
        if index % 5 == 1 and attempts[number] == 1:
            return "busy"  # busy first, answers on the retry
        if index % 5 == 2:
            return "failed" if attempts[number] == 1 else "answered"
        return "answered"

    csv_path = write_csv(tmp_path / "leads.csv", [f"L{i},Lead {i},{n},Asia/Kolkata" for i, n in enumerate(numbers)])
    async with dialling_server(tmp_path, outcome) as (server, exotel):
        store = server.app.state.services.store
        async with campaign_engine(server) as (_, campaigns):
            report = await campaigns.start(campaign_of(server), csv_path, fast_options())
            progress = await until_settled(store, report.run_id)
        leads = await store.list_leads(report.run_id)
        await exotel.drain()
    assert report.added == 20 and report.bad_rows == []
    assert progress.counts["done"] == 16 and progress.counts["failed"] == 4
    assert progress.outcomes and sum(progress.outcomes.values()) == 20
    by_phone = {lead.phone: lead for lead in leads}
    for i, number in enumerate(numbers):
        lead = by_phone["+91" + number]
        expected_attempts = 1 if i % 5 in (3, 4) else 2
        assert lead.attempts == expected_attempts, (i, lead.attempts, lead.last_status)
    dialled = Counter(call.form["From"] for call in exotel.calls)
    assert max(dialled.values()) <= 2 and sum(dialled.values()) == 20 + 12


async def test_bad_rows_and_do_not_call_list(tmp_path):
    csv_path = write_csv(tmp_path / "leads.csv", ["A,Asha,9876500001,", "B,Bad,12345,", "C,Chetan,98765 00003,",
                                                  "A,Dup,9876500004,", "D,Dnc,+91 98765 00005,"])
    dnc_path = tmp_path / "dnc.txt"
    dnc_path.write_text("# do not call\n09876500005\n")
    leads, bad, skipped = read_leads(csv_path, read_dnc(dnc_path))
    assert [lead.lead_id for lead in leads] == ["A", "C"]
    assert [(row.line, "invalid phone number" in row.reason or "duplicate" in row.reason) for row in bad] == [
        (3, True), (5, True)]
    assert skipped == 1
    (tmp_path / "nophone.csv").write_text("id,name\n1,x\n")
    with pytest.raises(ValueError, match="no phone column"):
        read_leads(tmp_path / "nophone.csv", frozenset())


def test_calling_window_in_the_leads_time_zone():
    options = CampaignOptions(window_start=time(10, 0), window_end=time(19, 0))
    at_8am_ist = datetime(2026, 11, 23, 2, 30, tzinfo=UTC)  # 08:00 in Kolkata
    opens = next_window_start(at_8am_ist, "Asia/Kolkata", options)
    assert opens == datetime(2026, 11, 23, 4, 30, tzinfo=UTC)  # 10:00 IST
    assert next_window_start(datetime(2026, 11, 23, 6, 0, tzinfo=UTC), "Asia/Kolkata", options) is None
    at_8pm_ist = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    assert next_window_start(at_8pm_ist, "Asia/Kolkata", options) == datetime(2026, 11, 24, 4, 30, tzinfo=UTC)
    # A lead in Dubai at 11:00 IST is at 09:30 local: not yet.
    assert next_window_start(datetime(2026, 11, 23, 5, 30, tzinfo=UTC), "Asia/Dubai", options) is not None


async def test_outside_the_window_nobody_is_dialled_and_no_attempt_is_used(tmp_path):
    csv_path = write_csv(tmp_path / "leads.csv", ["A,Asha,9876500001,Asia/Kolkata", "B,Bala,9876500002,"])
    night = datetime(2030, 11, 23, 17, 0, tzinfo=UTC)  # 22:30 IST (in the future: the jobs wait for real)
    async with dialling_server(tmp_path, "answered") as (server, exotel):
        store = server.app.state.services.store
        async with campaign_engine(server, clock=lambda: night) as (work, campaigns):
            report = await campaigns.start(campaign_of(server), csv_path,
                                           fast_options(window_start=time(10, 0), window_end=time(19, 0)))
            leads = await store.list_leads(report.run_id)
            for lead in leads:  # what the jobs do at once: each defers itself to the window's opening
                await work.dial_lead(lead.id)
            leads = await store.list_leads(report.run_id)
            waiting = [job for job in work.app.connector.jobs.values() if job["status"] == "todo"]
    assert exotel.calls == []
    assert [lead.state for lead in leads] == ["pending", "pending"]
    assert all(lead.attempts == 0 for lead in leads)
    opens = datetime(2030, 11, 24, 4, 30, tzinfo=UTC)  # 10:00 IST the next morning
    assert all(lead.next_attempt_at.replace(tzinfo=UTC) == opens for lead in leads)
    scheduled = {job["args"]["lead_row_id"]: job["scheduled_at"] for job in waiting if "lead_row_id" in job["args"]}
    assert scheduled == {lead.id: opens for lead in leads}, "each lead waits as a job scheduled for its window"


async def test_rate_limit_spaces_the_dialling(tmp_path):
    csv_path = write_csv(tmp_path / "leads.csv", [f"L{i},x,98765000{i:02d}," for i in range(6)])
    async with dialling_server(tmp_path, "busy") as (server, exotel):
        async with campaign_engine(server) as (work, campaigns):
            started = datetime.now(UTC)
            await campaigns.start(campaign_of(server), csv_path, fast_options(calls_per_minute=3, max_attempts=1))
            while len(exotel.calls) < 3:
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.0)  # every lead has been looked at by now; three wait for the minute
            dialled_so_far = len(exotel.calls)
            waiting = [job["scheduled_at"] for job in work.app.connector.jobs.values()
                       if job["status"] == "todo" and job["scheduled_at"] is not None]
    assert dialled_so_far == 3
    assert waiting, "the leads over the limit wait as scheduled jobs"
    assert all((at - started).total_seconds() >= 60 for at in waiting), "a job was scheduled inside the minute"


async def test_a_worker_stopped_mid_run_never_dials_anyone_twice(tmp_path):
    """A worker stops (cancelled, as at Ctrl-C) with calls live and dials in flight; a new
    worker finishes the run: leads in call are settled from their records, leads left mid-dial
    are reconciled (their call adopted, or dialled only if Exotel has none)."""
    csv_path = write_csv(tmp_path / "leads.csv", [f"L{i},Lead {i},98765100{i:02d}," for i in range(8)])
    async with dialling_server(tmp_path, "answered") as (server, exotel):
        store = server.app.state.services.store
        campaign = campaign_of(server)
        async with campaign_engine(server) as (_, campaigns):
            report = await campaigns.start(campaign, csv_path, fast_options(concurrency=2))
            while len(exotel.calls) < 3:
                await asyncio.sleep(0.05)
        async with campaign_engine(server) as (_, campaigns):
            resumed = await campaigns.start(campaign, csv_path, fast_options(concurrency=2))
            progress = await until_settled(store, report.run_id)
        await exotel.drain()
    assert resumed.resumed and resumed.run_id == report.run_id and resumed.added == 0
    dialled = Counter(call.form["From"] for call in exotel.calls)
    assert set(dialled.values()) == {1}, f"someone was called twice: {dialled}"
    assert progress.counts["done"] == 8 and progress.to_reconcile == []


async def test_pause_resume_and_cancel(tmp_path):
    csv_path = write_csv(tmp_path / "leads.csv", [f"L{i},Lead {i},98765300{i:02d}," for i in range(10)])
    async with dialling_server(tmp_path, "answered") as (server, exotel):
        store = server.app.state.services.store
        async with campaign_engine(server) as (_, campaigns):
            report = await campaigns.start(campaign_of(server), csv_path, fast_options(concurrency=2))
            while len(exotel.calls) < 2:
                await asyncio.sleep(0.05)
            assert await campaigns.pause(report.run_id)
            assert not await campaigns.pause(report.run_id), "pausing a paused run changes nothing"
            dialled_when_paused = len(exotel.calls)
            await asyncio.sleep(4.0)  # the live calls end; nobody new is dialled
            paused = await store.run_progress(report.run_id)
            assert len(exotel.calls) == dialled_when_paused
            assert await campaigns.resume(report.run_id)
            while len(exotel.calls) < dialled_when_paused + 2:
                await asyncio.sleep(0.05)
            assert await campaigns.cancel(report.run_id)
            progress = await until_settled(store, report.run_id)
        await exotel.drain()
    assert paused.state == "paused" and paused.counts["pending"] > 0
    assert progress.state == "cancelled"
    assert progress.counts["skipped"] > 0 and progress.counts["done"] == len(exotel.calls)
    assert progress.counts["done"] + progress.counts["skipped"] == 10


def test_a_campaign_runs_on_the_simulator_without_exotel_credentials(tmp_path):
    """`bot run --leads` with no EXOTEL_* settings: answered leads are called through the
    built-in simulator, a busy one is retried and fails, a bad row is reported; the campaign
    given as a YAML path finds its scenario beside it."""
    import os
    import sqlite3
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    campaign = tmp_path / "short.yaml"
    campaign.write_text((root / "configs" / "real_estate.yaml").read_text())
    (tmp_path / "short.scenario.yaml").write_text(
        "campaign: short\nlines:\n  - say: Sorry I am not interested\nhang_up_after_secs: 40\n")
    leads = tmp_path / "leads.csv"
    leads.write_text("id,name,phone,simulate\nA,Asha,98765 43210,\nB,Bina,98450 12345,busy\nC,Chetan,12345,\n")
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"),
           **{k: "" for k in ("EXOTEL_ACCOUNT_SID", "EXOTEL_API_KEY", "EXOTEL_API_TOKEN", "DEEPGRAM_API_KEY",
                              "OPENAI_API_KEY", "ELEVENLABS_API_KEY")}}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--leads", str(leads), "--campaign", str(campaign),
                           "--retry-delay", "0.5", "--max-attempts", "2"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "simulating" in out and "line 4" in out and "'12345'" in out, out[-3000:]
    db = sqlite3.connect(tmp_path / "data" / "calls.db")
    states = dict(db.execute("select lead_id, state from campaign_leads").fetchall())
    attempts = dict(db.execute("select lead_id, attempts from campaign_leads").fetchall())
    assert states == {"A": "done", "B": "failed"} and attempts["B"] == 2, (states, attempts)
    outcomes = [row[0] for row in db.execute("select outcome from call_records where status = 'completed'")]
    assert outcomes == ["not_interested"]


async def test_a_lead_left_mid_dial_is_adopted_or_dialled_again_only_when_exotel_has_no_call(tmp_path):
    """What the sweep does with leads a dead worker left `dialling`: one whose call reached
    Exotel (but never our records) adopts that call and settles with it; one whose request
    never reached Exotel is due again with its attempt unused; neither is dialled blindly."""
    csv_path = write_csv(tmp_path / "leads.csv", ["A,Asha,9876540001,", "B,Bala,9876540002,"])
    async with dialling_server(tmp_path, "busy") as (server, exotel):
        services = server.app.state.services
        store = services.store
        async with campaign_engine(server) as (work, campaigns):
            await campaigns.pause((await campaigns.start(campaign_of(server), csv_path,
                                                         fast_options(max_attempts=1))).run_id)
        run_id = (await store.unfinished_runs())[0].run_id
        await store.set_run_state(run_id, "running", ("paused",))
        reached, lost = await store.list_leads(run_id)
        for lead in (reached, lost):  # what a worker commits before its REST request
            assert (await store.claim_for_dial(lead.id, account="acme", account_per_minute=200)).claimed
        placed = await services.exotel.place_call(  # only A's request got out before the worker died
            to=reached.phone, caller_id="08047112233", app_id="4242", status_callback=None, custom_field=None,
            time_limit=60, time_out=30, record=False)
        await exotel.drain()
        async with campaign_engine(server) as (work, _):
            assert await work.reconcile(await store.get_lead(reached.id))
            assert await work.reconcile(await store.get_lead(lost.id))
            assert (await store.get_lead(lost.id)).attempts == 0, "the lost claim used up an attempt"
            await until_settled(store, run_id)
            adopted, again = await store.get_lead(reached.id), await store.get_lead(lost.id)
            record = await store.find_call(placed.sid)
        await exotel.drain()
    assert adopted.last_call_sid == placed.sid and adopted.state == "failed" and adopted.last_status == "busy"
    assert record is not None and record.status == "busy", "the adopted call got its record"
    froms = [c.form["From"][-10:] for c in exotel.calls]
    assert froms.count(reached.phone[-10:]) == 1, "A was dialled again"
    assert again.last_call_sid != placed.sid and again.state == "failed" and again.last_status == "busy"
    assert again.attempts == froms.count(lost.phone[-10:]) == 1, "B was dialled once, after the reconcile"


@pytest.mark.parametrize("every", [1, 2, 15, 30])
def test_the_sweep_runs_every_n_seconds_all_day(every):
    from croniter import croniter

    from bot.jobs.campaign_work import sweep_cron

    start = datetime(2026, 12, 4, 10, 7, 1, tzinfo=UTC)
    ticks = croniter(sweep_cron(every), start)
    times = [ticks.get_next(datetime) for _ in range(8)]
    gaps = {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)}
    assert gaps == {float(every)}, (sweep_cron(every), times)


@pytest.mark.parametrize("options, message", [
    (dict(window_start=time(10, 0, tzinfo=UTC), window_end=time(19, 0, tzinfo=UTC)), "without an offset"),
    (dict(retry_delay_secs=float("nan")), "retry-delay"),
    (dict(retry_delay_secs=float("inf")), "retry-delay"),
    (dict(retry_delay_secs=-1), "retry-delay"),
    (dict(concurrency=0), "concurrency"),
    (dict(calls_per_minute=201), "calls-per-minute"),
    (dict(retry_statuses=frozenset({"completed"})), "retry statuses"),
])
def test_campaign_options_that_would_stall_or_crash_a_run_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as refused:
        CampaignOptions(**options)
    assert "\n" not in str(refused.value)
