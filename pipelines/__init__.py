"""Build one Pipecat pipeline per call from a campaign."""
