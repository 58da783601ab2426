"""ml-audio-id: tell which reference track plays at the end of a broadcast segment."""
__version__ = "0.1.0"
