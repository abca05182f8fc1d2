"""Campaigns as jobs: any number of `bot worker` processes, on any machines, share the dialling.

On PostgreSQL the jobs live in procrastinate's tables beside the call records; on the embedded
SQLite default the same job functions run in the process that started the campaign, on
procrastinate's in-memory connector. The lead table stays the truth (bot/store/runs.py): a job
only says when to look at a lead again, so a lost job costs a delay, never a call.
"""
