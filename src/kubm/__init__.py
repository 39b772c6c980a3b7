"""kubm: Koopman Unified Behavioral Models for visuo-motor dexterous manipulation."""

__version__ = "0.1.0"
