"""Issue 15: every mistake gets one clear line and the right exit code, before anything dials."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config.campaigns import PhoneRules
from bot.config.phone import InvalidPhoneNumber, normalize_indian_phone
from bot.dialing.lead_files import read_leads

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> Path:
    """A clean working directory (no .env) with its own DATA_DIR; no Exotel credentials."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    for name in ("EXOTEL_ACCOUNT_SID", "EXOTEL_API_KEY", "EXOTEL_API_TOKEN", "EXOTEL_CALLER_ID",
                 "EXOTEL_APP_ID", "PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- 1. phone numbers


def test_phone_error_shows_the_number_as_typed_to_the_user_and_masked_to_logs():
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_indian_phone("12345")
    assert caught.value.for_user == "invalid phone number '12345': too short"
    assert "12345" not in str(caught.value), "str() reaches logs and records: masked"


def test_bot_run_lead_with_a_bad_number_names_it_and_exits_2(cli_env):
    lead = cli_env / "lead.json"
    lead.write_text(json.dumps({"name": "Rahul", "phone": "12345"}))
    result = runner.invoke(app, ["run", "--lead", str(lead), "--simulate"])
    assert result.exit_code == 2
    assert one_error_line(result) == "error: invalid phone number '12345': too short"


async def test_api_422_shows_the_number_as_typed(live_server):
    async with httpx.AsyncClient(base_url=live_server.http_url) as client:
        response = await client.post("/calls", json={"to": "12345"})
    assert response.status_code == 422
    assert response.json()["detail"] == "invalid phone number '12345': too short"


@pytest.mark.parametrize("typed, rules, reason", [
    ("+91 12345 67890", {}, "a landline, not a mobile (phones.landlines: true in the campaign dials landlines)"),
    ("+1 650 253 0000", {}, "a US number; this campaign dials IN (phones.countries)"),
    ("1800 123 4567", {"landlines": True}, "a toll-free number, not a lead's phone"),
])
def test_a_campaign_dials_only_what_its_phone_rules_allow(typed, rules, reason):
    with pytest.raises(InvalidPhoneNumber) as caught:
        PhoneRules(**rules).normalize(typed)
    assert caught.value.for_user == f"invalid phone number {typed!r}: {reason}"


def test_phone_rules_let_a_campaign_dial_landlines_and_other_countries():
    assert PhoneRules(landlines=True).normalize("+91 12345 67890") == "+911234567890"
    assert PhoneRules(landlines=True).normalize("(080) 4567 8901") == "+918045678901"
    assert PhoneRules(countries=["IN", "us"]).normalize("+1 650 253 0000") == "+16502530000"
    assert PhoneRules(countries=["IN", "US"]).normalize("98765 43210") == "+919876543210"
    with pytest.raises(ValueError, match="unknown country code"):
        PhoneRules(countries=["India"])


def test_bot_run_lead_with_a_landline_names_the_rule_and_exits_2(cli_env):
    lead = cli_env / "lead.json"
    lead.write_text(json.dumps({"name": "Rahul", "phone": "+91 12345 67890"}))
    result = runner.invoke(app, ["run", "--lead", str(lead), "--simulate"])
    assert result.exit_code == 2
    assert one_error_line(result) == ("error: invalid phone number '+91 12345 67890': a landline, not a "
                                      "mobile (phones.landlines: true in the campaign dials landlines)")


async def test_api_refuses_a_landline_with_422_before_any_dial(live_server):
    async with httpx.AsyncClient(base_url=live_server.http_url) as client:
        response = await client.post("/calls", json={"to": "+91 12345 67890"})
    assert response.status_code == 422
    assert "a landline, not a mobile" in response.json()["detail"]


def test_a_csv_row_with_a_landline_is_a_bad_row_unless_the_campaign_dials_landlines(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("phone,name\n+91 12345 67890,Asha\n98765 43210,Ravi\n")
    leads, bad, _ = read_leads(path, frozenset())
    assert [lead.payload["name"] for lead in leads] == ["Ravi"]
    assert [(row.line, "landline" in row.reason) for row in bad] == [(2, True)]
    leads, bad, _ = read_leads(path, frozenset(), PhoneRules(landlines=True))
    assert len(leads) == 2 and not bad


# --------------------------------------------------------------------------- 2. missing files


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--lead", "nope.json"], "error: lead file not found: nope.json"),
        (["--leads", "nope.csv"], "error: lead file not found: nope.csv"),
        (["--leads", "leads.csv", "--dnc", "nope.txt"], "error: do-not-call file not found: nope.txt"),
        (["--leads", "leads.csv", "--campaign", "nope.yaml"], "error: campaign file not found: nope.yaml"),
        (["--leads", "."], "error: lead file is a folder, not a file: ."),
    ],
)
def test_missing_input_files_are_one_line_exit_2(cli_env, args, line):
    (cli_env / "leads.csv").write_text("phone\n9876543210\n")
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 2
    assert one_error_line(result) == line


# --------------------------------------------------------------------------- 3. campaign options


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--concurrency", "0"], "error: concurrency must be at least 1 (got 0)"),
        (["--calls-per-minute", "0"], "error: calls-per-minute must be at least 1 (got 0)"),
        (["--max-attempts", "0"], "error: max-attempts must be at least 1 (got 0)"),
        (["--retry-delay", "-5"], "error: retry-delay must be between 0 and 604800 seconds (got -5)"),
        (["--window", "19:00-10:00"], "error: the calling window must start before it ends (got 19:00-10:00)"),
        (["--timezone", "Mars/Olympus"],
         "error: unknown time zone 'Mars/Olympus' (give an IANA name such as Asia/Kolkata)"),
    ],
)
def test_bad_campaign_options_are_refused_before_any_dial(cli_env, args, line, monkeypatch):
    import bot.cli.runs

    def no_services(*_, **__):
        raise AssertionError("services (and the dialer) were started for a bad option")

    monkeypatch.setattr(bot.cli.runs, "cli_services", no_services)
    (cli_env / "leads.csv").write_text("phone\n9876543210\n")
    result = runner.invoke(app, ["run", "--leads", "leads.csv", *args])
    assert result.exit_code == 2
    assert one_error_line(result) == line


def test_a_csv_row_with_an_unknown_time_zone_is_a_bad_row(tmp_path):
    from bot.dialing.lead_files import read_leads

    csv_path = tmp_path / "leads.csv"
    csv_path.write_text("id,phone,timezone\nA,9876500001,Asia/Kolkata\nB,9876500002,Mars/Olympus\n"
                        "C,9876500003,\n")
    leads, bad, _ = read_leads(csv_path, frozenset())
    assert [lead.lead_id for lead in leads] == ["A", "C"]
    assert [(row.line, row.reason) for row in bad] == [(3, "unknown time zone 'Mars/Olympus'")]


# --------------------------------------------------------------------------- 4. nothing succeeded


async def test_a_campaign_where_every_call_failed_exits_1_and_says_so(tmp_path, capsys):
    from bot.cli.runs import run_campaign
    from testing.dialling import dialling_server, write_csv

    csv_path = write_csv(tmp_path / "leads.csv", ["A,Asha,9876500001,", "B,Bad,12,"])
    async with dialling_server(tmp_path, "busy") as (server, exotel):
        code = await run_campaign(server.settings, csv_path, "real_estate", concurrency=2, calls_per_minute=100,
                                  window="00:00-23:59", timezone="Asia/Kolkata", max_attempts=1,
                                  retry_delay=0.2, dnc=None)
        await exotel.drain()
    out = capsys.readouterr().out
    assert code == 1, out
    assert "nothing succeeded: 1 lead(s) failed, 1 bad row(s)" in out


def test_nothing_succeeded_only_when_nothing_did():
    from bot.cli.runs import nothing_succeeded

    assert nothing_succeeded({"done": 1, "failed": 5}, 2) is None
    assert nothing_succeeded({}, 0) is None, "every lead on the do-not-call list: nothing to do is no failure"
    assert nothing_succeeded({}, 3) == "nothing succeeded: 0 lead(s) failed, 3 bad row(s)"


# --------------------------------------------------------------------------- 5. applet-url


def test_applet_url_without_public_base_url_warns_on_stderr(cli_env):
    result = runner.invoke(app, ["applet-url"])
    assert result.exit_code == 0
    assert result.stdout.startswith("http://localhost:8000/exotel/connect?sig="), "stdout stays just the URL"
    assert one_error_line(result).startswith("warning: PUBLIC_BASE_URL is http://localhost:8000")


def test_applet_url_with_a_public_base_url_prints_no_warning(cli_env, monkeypatch):
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://bot.example.com")
    result = runner.invoke(app, ["applet-url"])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith("https://bot.example.com/exotel/connect?sig=")


# --------------------------------------------------------------------------- 6. help


@pytest.mark.parametrize("command", [["run"], ["calls", "export"], ["serve"]])
def test_help_shows_flags_as_plain_flags(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert any(line.split() == ["--help", "Show", "this", "message", "and", "exit."]
               for line in result.stdout.splitlines())


def test_run_help_shows_simulate_without_a_value_and_options_with_their_type():
    lines = runner.invoke(app, ["run", "--help"], terminal_width=200).stdout.splitlines()
    assert any(line.split()[:2] == ["--simulate", "Use"] for line in lines if line.strip())
    assert any(line.split()[:2] == ["--concurrency", "<int>"] for line in lines if line.strip())


# --------------------------------------------------------------------------- 7. serve options


def test_serve_host_port_workers_override_the_settings(cli_env, monkeypatch):
    import bot.server.workers

    started = []
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setattr(bot.server.workers, "run_server", started.append)
    result = runner.invoke(app, ["serve", "--host", "127.0.0.1", "--port", "9123", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert (started[0].host, started[0].port, started[0].workers) == ("127.0.0.1", 9123, 2)
    runner.invoke(app, ["serve"])
    assert (started[1].port, started[1].workers) == (9001, 3), "without the options the settings stand"


def test_serve_with_a_bad_port_is_one_line_naming_it(cli_env, monkeypatch):
    import bot.server.workers

    monkeypatch.setattr(bot.server.workers, "run_server", lambda settings: pytest.fail("started"))
    result = runner.invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: invalid setting: PORT:")


# --------------------------------------------------------------------------- logging


def test_cli_commands_log_at_info_and_debug_only_with_verbose(tmp_path):
    """`bot calls list` no longer opens with a DEBUG line on stderr; `--verbose` brings them back."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data")}
    quiet = subprocess.run([sys.executable, "-m", "bot.cli", "calls", "list"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=120)
    loud = subprocess.run([sys.executable, "-m", "bot.cli", "--verbose", "calls", "list"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "DEBUG" not in quiet.stderr, quiet.stderr
    assert "DEBUG" in loud.stderr and "call store open" in loud.stderr


# --------------------------------------------------------------------------- calls list / show


def test_calls_list_shows_whole_sids_lead_and_masked_phone_and_show_takes_a_unique_prefix(tmp_path):
    import asyncio
    import os
    import subprocess
    import sys

    from bot.store import CallStore

    async def seed() -> None:
        store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'calls.db'}", migrate=True)
        try:
            await store.record_dialled("a1b2c3d4e5f60718293a4b5c6d7e8f90", "real_estate", {"name": "Asha"},
                                       "+919876543210")
            await store.record_dialled("a1b2ffff000011112222333344445555", "real_estate", {"name": "Bina"},
                                       "+919845012345")
        finally:
            await store.close()

    (tmp_path / "data").mkdir()
    asyncio.run(seed())
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "COLUMNS": "80"}

    def bot(*args: str):
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)

    listed = bot("calls", "list")  # 80 columns
    assert listed.returncode == 0, listed.stderr
    assert "a1b2c3d4e5f60718293a4b5c6d7e8f90" in listed.stdout, listed.stdout  # whole, never cut
    env["COLUMNS"] = "140"
    listed = bot("calls", "list")
    assert "Asha" in listed.stdout and "******3210" in listed.stdout and "9876543210" not in listed.stdout
    shown = bot("calls", "show", "a1b2c3")
    assert shown.returncode == 0 and json.loads(shown.stdout)["call_sid"] == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    ambiguous = bot("calls", "show", "a1b2")
    assert ambiguous.returncode == 1 and "more than one call starts with 'a1b2'" in ambiguous.stdout
    assert bot("calls", "show", "zz").returncode == 1


# --------------------------------------------------------------------------- campaigns list / check


def test_campaigns_list_and_check_say_what_a_campaign_will_do(tmp_path, cli_env):
    import shutil

    root = Path(__file__).resolve().parent.parent
    listed = runner.invoke(app, ["campaigns", "list"], env={"CAMPAIGNS_DIR": str(root / "configs")})
    assert listed.exit_code == 0 and "real_estate" in listed.stdout and "hinglish_followup" in listed.stdout
    checked = runner.invoke(app, ["campaigns", "check", str(root / "configs" / "real_estate.yaml")])
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    assert "says first (lead named Rahul): Hello Rahul, this is Priya from Sunrise Homes." in checked.stdout
    assert "collects: budget (string), bhk (integer)" in checked.stdout
    assert "simulated caller: 5 line(s)" in checked.stdout
    solar = tmp_path / "solar.yaml"
    shutil.copy(root / "configs" / "real_estate.yaml", solar)
    solar.write_text(solar.read_text().replace("\ngreeting:", "\ngreting:", 1))
    bad = runner.invoke(app, ["campaigns", "check", str(solar)])
    assert bad.exit_code == 2 and "greting: unknown key (did you mean 'greeting'?)" in one_error_line(bad)


def test_bot_worker_needs_postgres_in_one_line(cli_env):
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "bot worker needs DATABASE_URL on PostgreSQL" in one_error_line(result)


def test_bot_run_no_worker_needs_postgres_in_one_line(cli_env, monkeypatch):
    for name, value in (("EXOTEL_ACCOUNT_SID", "acme"), ("EXOTEL_API_KEY", "key"), ("EXOTEL_API_TOKEN", "token"),
                        ("EXOTEL_CALLER_ID", "08047112233"), ("EXOTEL_APP_ID", "4242")):
        monkeypatch.setenv(name, value)
    leads = cli_env / "leads.csv"
    leads.write_text("id,phone\nA,9876543210\n")
    result = runner.invoke(app, ["run", "--leads", str(leads), "--no-worker"])
    assert result.exit_code == 2
    assert "--no-worker needs DATABASE_URL on PostgreSQL" in one_error_line(result)
