"""Exotel voice agent: dial leads through Exotel and talk with them in real time (Pipecat)."""

__version__ = "0.1.0"
