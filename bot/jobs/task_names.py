"""The campaign jobs' names and queue: what a process needs to enqueue one without loading them."""

QUEUE = "campaigns"
DIAL_LEAD = "campaign.dial_lead"
SETTLE_CALL = "campaign.settle_call"
WAKE_RUN = "campaign.wake_run"
SWEEP = "campaign.sweep"
