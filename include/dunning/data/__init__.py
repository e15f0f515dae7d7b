"""Reference tables shipped with the domain core (read through ``importlib.resources``)."""
