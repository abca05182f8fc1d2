"""Wire-protocol serializers (Exotel's media-stream JSON <-> Pipecat frames)."""

from serializers.exotel import ExotelFrameSerializer, ExotelStopFrame

__all__ = ["ExotelFrameSerializer", "ExotelStopFrame"]
