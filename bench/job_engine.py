"""The campaign job engine at Exotel's 200 calls a minute: the rate it holds, dials per lead,
and how late a due retry is dialled, on this machine's PostgreSQL.

    .venv/bin/python bench/job_engine.py [--leads 300] [--workers 2] [--sweep-secs 2]
                                         [--distinct-names] [--label default] [--timeout 480]
                                         [--keep-logs DIR]

Set-up, all on loopback: a fresh PostgreSQL database (dropped after; the server is
TEST_POSTGRES_URL's, as testing/databases.py reads it, default postgres@127.0.0.1:5432),
the fake Exotel REST API (bot/simulator/exotel_rest.py) in this process without media (an
answered call just completes after --call-secs; it rings --ring-secs), one node (`server.py`,
WORKERS=1, PUBLIC_BASE_URL its own address so the fake's status callbacks reach it) and
--workers `bot worker` processes, all with EXOTEL_CALLS_PER_MINUTE=200. This process starts
the run (bot.jobs.campaigns.Campaigns.start_leads) with concurrency = the number of leads, 200
calls a minute, window 00:00-23:59:59, two attempts, 70 s between them, retrying busy only.

Leads: --leads (300) of them; every 5th (line 5, 10, ...) is busy on its first attempt and
answered on its second, the others are answered. With 300 leads: 200 dials at once, 100 more
when the 62-s claim window frees them, and the 60 retries due 70 s after their busy call,
when the window has room for them (their wait is the job engine's scheduling alone). The
leads share one name, so a worker synthesizes the greeting once (offline: Piper) and the bench
measures the engine; --distinct-names gives every lead its own, so every dial has its greeting
synthesized in the worker, as in a real offline campaign (CPU the engine then competes with).

Answered calls have no media session here, so their record is final only 30 s after Exotel's
`completed` (bot/exotel/call_status.py SESSION_END_GRACE_SECS) and the sweep settles them:
the wall time to all leads final includes that.

Measured (Exotel's view: the fake's request times):
- rate: most dials in any 60 s (must be <= 200) and any 62 s; dials in the first 60 s
  from the first dial; the sustained rate (dials per minute from the first dial to the last);
- dials per lead against the attempts on the lead (a lead dialled more often than its
  attempts is a double dial and fails the bench);
- due -> dial for the retried leads: the second dial's arrival minus the lead's due time
  (campaign_leads.next_attempt_at, polled while the run goes on: settling the lead clears it),
  median / p90 / max; and claim -> request (claimed_at, the database's clock, to arrival) for
  every dial; the fake's time.monotonic() is put on the wall clock by one paired reading;
- settle lag: from when a lead's last call could be settled (its end at Exotel, plus the 30-s
  grace for an answered call) to the first poll that saw the lead final (+ up to --poll-secs);
- the wall time from start to every lead final, and the late dials the workers logged
  ("could not leave in time"); the dial grants that placed no call; the status callbacks the
  node refused (a dial's record not written within the node's 5-s wait) and never took.

Prints the figures and merges the run into bench/results/job_engine.json under --label.
Exit status 1 when the rate went over 200 in 60 s, a lead was dialled more than its
attempts, or the run did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.measures import percentile  # noqa: E402
from bot.config.campaigns import load_campaign  # noqa: E402
from bot.config.logging_setup import setup_logging  # noqa: E402
from bot.config.settings import load_settings  # noqa: E402
from bot.dialing.campaign_options import CampaignOptions  # noqa: E402
from bot.dialing.lead_files import read_leads  # noqa: E402
from bot.exotel.call_status import SESSION_END_GRACE_SECS  # noqa: E402
from bot.jobs.campaigns import Campaigns  # noqa: E402
from bot.jobs.job_app import postgres_job_app  # noqa: E402
from bot.server.local_server import free_port  # noqa: E402
from bot.simulator.exotel_rest import FakeExotelREST  # noqa: E402
from bot.store import CallStore  # noqa: E402
from testing.databases import PG_URL, pg_dsn  # noqa: E402
from testing.job_workers import job_worker, most_in_any_window  # noqa: E402
from testing.server_process import ServerProcess, server_process  # noqa: E402

OUT = ROOT / "bench" / "results" / "job_engine.json"
PER_MINUTE = 200  # Exotel's limit per account
RETRY_DELAY_SECS = 70.0
BUSY_EVERY = 5
ACCOUNT, API_KEY, API_TOKEN = "benchacct", "bench-key", "bench-token"
SECRET = "job-engine-bench-callback-secret-0123456789"
LATE_DIAL = "could not leave in time"
FINAL = ("done", "failed", "skipped")
# a log line of that level (bot/config/logging_setup.py FORMAT: time, level, call_sid, message)
LEVEL_LINE = {level: re.compile(rf"^\d\d:\d\d:\d\d\.\d{{3}} {level}\b.*$", re.M) for level in ("WARNING", "ERROR")}


def outcome_rule():
    """Every 5th lead (line 5, 10, ...: index 4, 9, ...) busy on its first attempt; the rest answered."""
    tries: Counter = Counter()

    def outcome(number: str) -> str:
        tries[number[-10:]] += 1
        if int(number[-5:]) % BUSY_EVERY == BUSY_EVERY - 1 and tries[number[-10:]] == 1:
            return "busy"
        return "answered"

    return outcome


def stats(values: list[float]) -> dict[str, Any]:
    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {"n": len(values), "median": r(percentile(values, 50)), "p90": r(percentile(values, 90)),
            "max": r(max(values) if values else None), "min": r(min(values) if values else None)}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"cpus": os.cpu_count(), "cpu_model": model or platform.processor() or platform.machine(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def commit() -> dict[str, Any]:
    """HEAD, and the tracked files changed on top of it (what was measured is the working tree)."""
    porcelain = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout
    changed = [line[3:] for line in porcelain.splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD") + ("+changes" if changed else ""), "changed_files": changed}


def wait_for_job_workers(tmp: Path, processes: list[subprocess.Popen], within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    logs = [tmp / f"worker-{i}.log" for i in range(len(processes))]
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"bot worker exited with {process.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
        if all("campaign job worker" in (text := log.read_text(errors="replace")) and "started" in text
               for log in logs):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the job workers did not start within {within:.0f} s")


class LeadWatch:
    """What the lead table showed while the run went on: per lead, the first due time set after
    an attempt (settling the lead clears next_attempt_at, so it is read while it is there) and
    the claim time of each attempt (claimed_at, kept until the next claim)."""

    def __init__(self) -> None:
        self.due: dict[str, datetime.datetime] = {}
        self.claims: dict[str, dict[int, datetime.datetime]] = {}
        self.final_at: dict[str, float] = {}  # wall clock of the first poll that saw the lead final
        self.polls = 0

    def see(self, leads: list[Any]) -> None:
        self.polls += 1
        now = time.time()
        for lead in leads:
            if lead.state in FINAL:
                self.final_at.setdefault(lead.lead_id, now)
            if lead.next_attempt_at is not None and lead.attempts >= 1 and lead.lead_id not in self.due:
                self.due[lead.lead_id] = as_utc(lead.next_attempt_at)
            if lead.claimed_at is not None and lead.attempts >= 1:
                self.claims.setdefault(lead.lead_id, {})[lead.attempts] = as_utc(lead.claimed_at)


def record_summary(record: Any) -> dict[str, Any] | None:
    """A call record as the sweep judges it (bot/exotel/call_status.py call_is_over)."""
    if record is None:
        return None
    return {"status": record.status, "ended_at": str(record.ended_at) if record.ended_at else None,
            "end_reason": record.end_reason}


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def job_counts(store: CallStore) -> dict[str, int]:
    """procrastinate's jobs left in the database, per task and status (successful ones are deleted)."""
    from sqlalchemy import text

    async with store.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT task_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2"))).all()
    return {f"{task} {status}": count for task, status, count in rows}


async def measure(args: argparse.Namespace, url: str, tmp: Path, log) -> dict[str, Any]:
    campaign = load_campaign(ROOT / "configs" / "real_estate.yaml")
    options = CampaignOptions(concurrency=args.leads, calls_per_minute=PER_MINUTE,
                              window_start=datetime.time(0, 0), window_end=datetime.time(23, 59, 59),
                              max_attempts=2, retry_delay_secs=RETRY_DELAY_SECS,
                              retry_statuses=frozenset({"busy"}))
    numbers = [f"98765{i:05d}" for i in range(args.leads)]
    csv = tmp / "leads.csv"
    csv.write_text("id,name,phone\n" + "".join(
        f"L{i},{f'Lead {i}' if args.distinct_names else 'Rahul'},{n}\n" for i, n in enumerate(numbers)))
    parsed = read_leads(csv, options.do_not_call, campaign.phones)
    assert len(parsed[0]) == args.leads and not parsed[1], parsed[1][:3]

    store = await CallStore.open(url, migrate=True)
    watch = LeadWatch()
    finished_at: float | None = None
    load_max = 0.0
    run_id = ""
    try:
        async with FakeExotelREST(account_sid=ACCOUNT, api_key=API_KEY, api_token=API_TOKEN, outcomes=outcome_rule(),
                                  ring_secs=args.ring_secs, hangup_after=args.call_secs) as exotel:
            port = free_port()
            node_url = f"http://127.0.0.1:{port}"
            env = {
                "DATABASE_URL": url, "EXOTEL_ACCOUNT_SID": ACCOUNT, "EXOTEL_API_KEY": API_KEY,
                "EXOTEL_API_TOKEN": API_TOKEN, "EXOTEL_CALLER_ID": "08047112233", "EXOTEL_APP_ID": "4242",
                "EXOTEL_API_BASE_URL": exotel.base_url, "EXOTEL_CALLS_PER_MINUTE": str(PER_MINUTE),
                "CALLBACK_SECRET": SECRET, "PUBLIC_BASE_URL": node_url, "JOB_SWEEP_SECS": str(args.sweep_secs),
                "LOG_LEVEL": "INFO",
            }
            (tmp / "node").mkdir()
            with ExitStack() as stack:
                node: ServerProcess = stack.enter_context(
                    server_process(tmp / "node", 1, wait_for=0, PORT=str(port), **env))
                node.port = port  # the port chosen here, so PUBLIC_BASE_URL could name it
                await asyncio.to_thread(node.wait_for_workers, 1)
                workers = [stack.enter_context(job_worker(tmp, i, env)) for i in range(args.workers)]
                await asyncio.to_thread(wait_for_job_workers, tmp, workers)
                log(f"node {node_url} and {args.workers} job worker(s) up; starting {args.leads} leads")

                settings = load_settings(_env_file=None, database_url=url, data_dir=tmp / "bench")
                app = postgres_job_app(settings, pool_size=2)
                async with app.open_async():
                    wall0, mono0 = time.time(), time.monotonic()  # the fake's .at -> wall clock
                    started = time.monotonic()
                    run = await Campaigns(store, app, ACCOUNT).start_leads(campaign, parsed, options,
                                                                           f"bench:job_engine:{uuid.uuid4().hex}")
                    run_id = run.run_id
                    deadline = started + args.timeout
                    last_report = started
                    while time.monotonic() < deadline:
                        leads = await store.list_leads(run_id)
                        watch.see(leads)
                        if leads and all(lead.state in FINAL for lead in leads):
                            finished_at = time.monotonic()
                            break
                        load_max = max(load_max, os.getloadavg()[0])
                        if time.monotonic() - last_report >= 15:
                            last_report = time.monotonic()
                            states = Counter(lead.state for lead in leads)
                            grants = len(await store.dial_grant_times(ACCOUNT))
                            log(f"  +{last_report - started:5.0f} s: {len([c for c in exotel.calls if c.sid])} dials, "
                                f"{grants} dial grants; leads {dict(sorted(states.items()))}; "
                                f"load {os.getloadavg()[0]:.1f}")
                        await asyncio.sleep(args.poll_secs)
                    leads = await store.list_leads(run_id)
                    watch.see(leads)
                    grants_kept = len(await store.dial_grant_times(ACCOUNT))
                    records = {lead.last_call_sid: await store.find_call(lead.last_call_sid) for lead in leads
                               if lead.state not in FINAL and lead.last_call_sid}
                    jobs = await job_counts(store)
                load_after = os.getloadavg()[0]
                worker_logs = [(tmp / f"worker-{i}.log").read_text(errors="replace") for i in range(args.workers)]
            # the node and the workers are stopped here (ExitStack), the fake still up
            node_log = node.log()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for path in [node.log_path, *(tmp / f"worker-{i}.log" for i in range(args.workers))]:
                    shutil.copy(path, args.keep_logs / path.name)
            calls = list(exotel.calls)
            callbacks = list(exotel.callbacks_sent)
            exotel_status = {sid: call.status for sid, call in exotel.state.items()}
            exotel_ended = {sid: call.end_time for sid, call in exotel.state.items() if call.end_time is not None}
    finally:
        await store.close()

    accepted = [c for c in calls if c.sid]
    refused = [c for c in calls if not c.sid]

    def to_wall(at: float) -> float:
        return wall0 + (at - mono0)

    times = sorted(c.at for c in accepted)
    first = times[0] if times else mono0

    # dials per lead
    by_number: dict[str, list[Any]] = {}
    for call in sorted(accepted, key=lambda c: c.at):
        by_number.setdefault(call.form["From"][-10:], []).append(call)
    by_lead = {lead.lead_id: lead for lead in leads}
    per_lead = {lead.lead_id: len(by_number.get(lead.phone[-10:], [])) for lead in leads}
    over = {lid: (n, by_lead[lid].attempts) for lid, n in per_lead.items() if n > by_lead[lid].attempts}
    under = {lid: (n, by_lead[lid].attempts) for lid, n in per_lead.items() if n < by_lead[lid].attempts}

    # scheduling: due -> second dial, for the retried leads; claim -> request for every dial
    due_to_dial, early = [], []
    claim_to_request = []
    for lead in leads:
        dials = by_number.get(lead.phone[-10:], [])
        claims = watch.claims.get(lead.lead_id, {})
        for attempt, call in enumerate(dials, start=1):
            if attempt in claims:
                claim_to_request.append(to_wall(call.at) - claims[attempt].timestamp())
        if len(dials) >= 2 and lead.lead_id in watch.due:
            wait = to_wall(dials[1].at) - watch.due[lead.lead_id].timestamp()
            due_to_dial.append(wait)
            if wait < 0:
                early.append((lead.lead_id, round(wait, 3)))
    retried = [lid for lid, n in per_lead.items() if n >= 2]
    # settle lag: a lead seen final after its last call could be settled (the call's end at Exotel,
    # plus the grace an answered call without a media session waits for)
    settle_lag = []
    for lead in leads:
        ended = exotel_ended.get(lead.last_call_sid or "")
        if lead.lead_id in watch.final_at and ended is not None:
            grace = SESSION_END_GRACE_SECS if exotel_status.get(lead.last_call_sid or "") == "completed" else 0.0
            settle_lag.append(watch.final_at[lead.lead_id] - ended.timestamp() - grace)
    retry_times = sorted(by_number[by_lead[lid].phone[-10:]][1].at - first for lid in retried)

    late_dials = sum(text.count(LATE_DIAL) for text in worker_logs)
    answers: dict[tuple[str, str], list[int | None]] = {}  # (Sid, Status) -> the node's answers to each try
    for callback in callbacks:
        answers.setdefault((callback.payload.get("CallSid"), callback.call_status), []).append(callback.status)
    taken = {key: any(s is not None and 200 <= s < 300 for s in tries) for key, tries in answers.items()}
    span = (times[-1] - first) if len(times) > 1 else 0.0
    states = Counter(lead.state for lead in leads)
    figures = {
        "finished": finished_at is not None,
        "wall_secs_to_all_final": round(finished_at - started, 1) if finished_at is not None else None,
        "lead_states": dict(sorted(states.items())),
        "dials": len(accepted),
        "dial_grants": grants_kept,  # claims that took a rate slot (the sweep forgets them after 10 min)
        "dial_grants_without_a_dial": grants_kept - len(accepted),
        "jobs_left": jobs,
        "loadavg_1min": {"max_during": round(load_max, 2), "after": round(load_after, 2)},
        "refused_requests": len(refused),
        "rate": {
            "most_in_any_60s": most_in_any_window(times, 60.0),
            "most_in_any_62s": most_in_any_window(times, 62.0),
            "in_first_60s_from_first_dial": sum(1 for t in times if t - first < 60.0),
            "first_dial_after_start_secs": round(first - started, 3) if times else None,
            "first_burst_secs": round(times[min(len(times), PER_MINUTE) - 1] - first, 3) if times else None,
            "last_dial_after_first_secs": round(span, 3),
            "sustained_per_minute": round(len(times) / span * 60, 1) if span else None,
        },
        "dials_per_lead": {
            "max": max(per_lead.values(), default=0),
            "mean": round(sum(per_lead.values()) / len(per_lead), 3) if per_lead else None,
            "attempts_max": max((lead.attempts for lead in leads), default=0),
            "attempts_mean": round(sum(lead.attempts for lead in leads) / len(leads), 3) if leads else None,
            "dialled_more_than_attempts": over,
            "dialled_less_than_attempts": under,
        },
        "retries": {
            "retried_leads": len(retried),
            "second_dial_after_first_dial_secs": {"first": round(retry_times[0], 1) if retry_times else None,
                                                  "last": round(retry_times[-1], 1) if retry_times else None},
            "due_to_dial_secs": stats(due_to_dial),
            "dialled_before_due": early,
            "due_times_seen": len(watch.due),
        },
        "claim_to_request_secs": stats(claim_to_request),
        "settle_lag_secs": stats(settle_lag),
        "late_dials_logged": late_dials,
        "status_callbacks": {
            "sent": len(answers),
            "refused_at_least_once": sum(1 for tries in answers.values()
                                         if any(s is None or not 200 <= s < 300 for s in tries)),
            "never_taken_by_status": dict(Counter(status for (_, status), ok in taken.items() if not ok)),
            "refusals_logged_by_node": node_log.count("status callback refused"),
        },
        "worker_log_warnings": sum(len(LEVEL_LINE["WARNING"].findall(text)) for text in worker_logs),
        "worker_log_errors": sum(len(LEVEL_LINE["ERROR"].findall(text)) + text.count("Traceback")
                                 for text in worker_logs),
        "worker_warnings_seen": sorted({line[:160] for text in worker_logs
                                        for line in LEVEL_LINE["WARNING"].findall(text)})[:10],
        "node_log_errors": len(LEVEL_LINE["ERROR"].findall(node_log)) + node_log.count("Traceback"),
        "node_errors_seen": sorted({line[13:173] for line in LEVEL_LINE["ERROR"].findall(node_log)})[:10],
        "lead_polls": watch.polls,
    }
    figures["unfinished_leads"] = [  # why a lead is not final: what Exotel says of its last call
        {"lead": lead.lead_id, "state": lead.state, "attempts": lead.attempts, "lead_status": lead.last_status,
         "record": record_summary(records.get(lead.last_call_sid or "")),
         "exotel_status": exotel_status.get(lead.last_call_sid or ""),
         "callbacks_taken": {status: ok for (sid, status), ok in taken.items() if sid == lead.last_call_sid}}
        for lead in leads if lead.state not in FINAL][:10]
    if figures["worker_log_errors"] or not figures["finished"]:
        figures["worker_log_tails"] = [text[-2000:] for text in worker_logs]
    return figures


async def with_database(args: argparse.Namespace, log) -> dict[str, Any]:
    """A fresh database for the run, always dropped after."""
    name = f"jobbench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn(), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory(prefix="job-engine-") as tmp:
            return await measure(args, url, Path(tmp), log)
    finally:
        admin = await asyncpg.connect(pg_dsn(), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        log(f"database {name} dropped")


def show(figures: dict[str, Any], log) -> list[str]:
    """Print the figures; return the failures."""
    rate, per_lead, retries = figures["rate"], figures["dials_per_lead"], figures["retries"]
    due, claim = retries["due_to_dial_secs"], figures["claim_to_request_secs"]
    log(f"\ndials: {figures['dials']} accepted, {figures['refused_requests']} refused; dial grants "
        f"{figures['dial_grants']} ({figures['dial_grants_without_a_dial']} without a dial); "
        f"leads {figures['lead_states']}")
    log(f"rate held: most in any 60 s {rate['most_in_any_60s']} (limit {PER_MINUTE}), in any 62 s "
        f"{rate['most_in_any_62s']}; first 60 s {rate['in_first_60s_from_first_dial']} "
        f"(first {min(PER_MINUTE, figures['dials'])} in {rate['first_burst_secs']} s); sustained "
        f"{rate['sustained_per_minute']}/min over {rate['last_dial_after_first_secs']} s")
    log(f"dials per lead: max {per_lead['max']}, mean {per_lead['mean']} (attempts max {per_lead['attempts_max']}, "
        f"mean {per_lead['attempts_mean']})")
    log(f"retries: {retries['retried_leads']} leads, second dials {retries['second_dial_after_first_dial_secs']['first']}"
        f"-{retries['second_dial_after_first_dial_secs']['last']} s after the first dial")
    log(f"due -> dial (s): median {due['median']}, p90 {due['p90']}, max {due['max']}, min {due['min']} (n {due['n']})")
    log(f"claim -> request (s): median {claim['median']}, p90 {claim['p90']}, max {claim['max']} (n {claim['n']})")
    lag = figures["settle_lag_secs"]
    log(f"settle lag (last call's end [+{SESSION_END_GRACE_SECS:.0f} s grace if answered] -> lead seen final, s): "
        f"median {lag['median']}, p90 {lag['p90']}, max {lag['max']} (n {lag['n']})")
    log(f"wall time to all leads final: {figures['wall_secs_to_all_final']} s; late dials logged: "
        f"{figures['late_dials_logged']}; worker warnings {figures['worker_log_warnings']}, errors "
        f"{figures['worker_log_errors']}; node errors {figures['node_log_errors']}")
    callbacks = figures["status_callbacks"]
    log(f"status callbacks: {callbacks['sent']} sent, {callbacks['refused_at_least_once']} refused at least once, "
        f"never taken {callbacks['never_taken_by_status'] or 0}; load avg max {figures['loadavg_1min']['max_during']}")
    failures = []
    if rate["most_in_any_60s"] > PER_MINUTE:
        failures.append(f"more than {PER_MINUTE} dials in 60 s: {rate['most_in_any_60s']}")
    if per_lead["dialled_more_than_attempts"]:
        failures.append(f"leads dialled more than their attempts: {per_lead['dialled_more_than_attempts']}")
    if per_lead["dialled_less_than_attempts"]:
        failures.append(f"attempts with no dial at Exotel: {per_lead['dialled_less_than_attempts']}")
    if retries["dialled_before_due"]:
        failures.append(f"retries dialled before they were due: {retries['dialled_before_due']}")
    if not figures["finished"]:
        failures.append(f"the run did not finish: {figures['lead_states']}")
    for failure in failures:
        log(f"FAIL: {failure}")
    return failures


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="`bot worker` processes")
    parser.add_argument("--sweep-secs", type=int, default=2, help="JOB_SWEEP_SECS")
    parser.add_argument("--ring-secs", type=float, default=1.0)
    parser.add_argument("--call-secs", type=float, default=5.0, help="how long an answered call lasts")
    parser.add_argument("--distinct-names", action="store_true",
                        help="a name per lead: a greeting synthesized (Piper, offline) for every dial")
    parser.add_argument("--poll-secs", type=float, default=0.5, help="how often the lead table is read")
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds for every lead to be final")
    parser.add_argument("--keep-logs", type=Path, help="copy the node's and workers' logs to this folder")
    parser.add_argument("--label", default="default", help="key of this run in bench/results/job_engine.json")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    setup_logging("WARNING")

    def log(text: str) -> None:
        print(text, flush=True)

    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # cleanup runs on SIGTERM too
    from importlib.metadata import version

    run: dict[str, Any] = {
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **commit(),
        "machine": machine(),
        "python": platform.python_version(),
        "procrastinate": version("procrastinate"),
        "postgres": make_url(PG_URL).render_as_string(hide_password=True),
        "settings": {
            "leads": args.leads, "workers": args.workers, "job_sweep_secs": args.sweep_secs,
            "exotel_calls_per_minute": PER_MINUTE, "run_calls_per_minute": PER_MINUTE, "concurrency": args.leads,
            "window": "00:00-23:59:59", "max_attempts": 2, "retry_delay_secs": RETRY_DELAY_SECS,
            "retry_statuses": ["busy"], "ring_secs": args.ring_secs, "answered_call_secs": args.call_secs,
            "outcomes": f"every {BUSY_EVERY}th lead busy on its first attempt then answered; the rest answered",
            "lead_names": ("one per lead (a greeting synthesized with Piper per dial)" if args.distinct_names
                           else "one for all (one greeting synthesized per worker)"),
            "media": "none (answered calls complete without a media socket)", "node_workers": 1,
        },
    }
    log(f"job engine bench: {args.leads} leads, {args.workers} worker(s), {PER_MINUTE}/min, "
        f"commit {run['commit']}, {run['machine']['cpus']} CPUs ({run['machine']['cpu_model']})")
    started = time.monotonic()
    run["figures"] = await with_database(args, log)
    run["bench_secs"] = round(time.monotonic() - started, 1)
    failures = show(run["figures"], log)
    run["failures"] = failures
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"written: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} [{args.label}]")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
