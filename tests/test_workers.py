"""Several worker processes share the port; a dialled call's lead, stored by another process,
is found by whichever worker takes the media socket."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bot.exotel_emulator import EmulatorConfig, ExotelEmulator, HangUp
from bot.local_server import free_port
from bot.settings import load_settings
from bot.store import CallStore

ROOT = Path(__file__).resolve().parent.parent


def test_dialled_calls_are_served_by_any_worker(tmp_path):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(tmp_path), "WORKERS": "2",
           "DEEPGRAM_API_KEY": "", "OPENAI_API_KEY": "", "ELEVENLABS_API_KEY": ""}
    server = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        pids = set()
        deadline = time.time() + 90
        while time.time() < deadline and len(pids) < 2:
            try:
                with httpx.Client(timeout=1) as client:  # a new connection each time: any worker
                    pids.add(client.get(f"http://127.0.0.1:{port}/health").json()["worker_pid"])
            except httpx.TransportError:
                time.sleep(0.2)
        assert len(pids) == 2, f"two worker processes answer ({pids})"

        names = ["Kavya", "Arjun", "Meera", "Rohan", "Isha", "Vikram", "Anil", "Divya", "Kiran", "Neha", "Ravi", "Sana"]
        db_url = load_settings(_env_file=None, data_dir=tmp_path).database_url

        async def dial_then_answer(batch: range):
            # "Dialled" by this test process: only the shared database knows the leads.
            store = await CallStore.open(db_url, migrate=True)
            for i in batch:
                await store.record_dialled(f"CA-w{i:02d}", "real_estate", {"id": f"L{i}", "name": names[i]},
                                           "+919876500000")
            await store.close()
            calls = [ExotelEmulator(EmulatorConfig(url=f"ws://127.0.0.1:{port}/media", call_sid=f"CA-w{i:02d}",
                                                   custom_parameters={})) for i in batch]
            return await asyncio.gather(*(call.run([HangUp(at=5.0)]) for call in calls))

        served_by: set[int] = set()
        rows: list = []
        for start in range(0, len(names), 4):  # the kernel spreads connections; usually one batch does
            results = asyncio.run(dial_then_answer(range(start, start + 4)))
            assert all(r.violations == [] for r in results)
            time.sleep(1.0)
            rows = sqlite3.connect(tmp_path / "calls.db").execute(
                "select call_sid, transcript, metrics from call_records order by call_sid").fetchall()
            served_by = {json.loads(m)["worker_pid"] for _, _, m in rows if m and "worker_pid" in json.loads(m)}
            if len(served_by) == 2:
                break
    finally:
        server.terminate()
        server.wait(timeout=30)
    for call_sid, transcript, _ in rows:
        index = int(call_sid.removeprefix("CA-w"))
        assert json.loads(transcript)[0]["text"].startswith(f"Hello {names[index]}"), "the lead was found"
    assert served_by <= pids and len(served_by) == 2, f"both workers took calls ({served_by})"
