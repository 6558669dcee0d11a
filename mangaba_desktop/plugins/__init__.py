"""Plugins shipped with the app, installed through the same entry points as anyone else's."""
