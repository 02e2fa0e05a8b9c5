"""Fleet updater: puts a target software profile on every music player listed in a CSV.

The public entry point for one player is :func:`fleet_updater.client.update_player`;
the command line lives in :mod:`fleet_updater.cli`.
"""

__version__ = "1.0.0"

__all__ = ["__version__", "update_player"]


def update_player(*args, **kwargs):  # pragma: no cover - thin re-export
    """Update one player; see :func:`fleet_updater.client.update_player`."""
    from .client import update_player as _update_player

    return _update_player(*args, **kwargs)
