"""Live spike attribution while training runs: which examples and groups carry each loss spike, and what to do.

- :mod:`~oppsig.live.detector`: the online spike rule (:class:`SpikeDetector`);
- :mod:`~oppsig.live.attribution`: the rise split over examples and groups (:class:`LiveAttribution`);
- :mod:`~oppsig.live.text`: spikes and groups in words;
- :mod:`~oppsig.live.events`: :class:`SpikeEvent`, known groups, ``<run>/events.jsonl``;
- :mod:`~oppsig.live.groups`: is a ``signals.json`` fit for this run (:func:`check_groups_file`);
- :mod:`~oppsig.live.rollback`: where a rollback goes back to (:class:`RollbackSource`);
- :mod:`~oppsig.live.session`: :class:`LiveSession`, attribution + actions + events + TensorBoard for one run;
- :mod:`~oppsig.live.hook`: :class:`LiveHook`, the session as a hook of ``oppsig train``.

The framework callbacks (:mod:`oppsig.integrations`) drive a :class:`LiveSession` too.
"""

from .attribution import LiveAttribution, group_shares, online_groups, rise_contributions
from .detector import SpikeCheck, SpikeDetector, spike_test, trend_baseline
from .events import EVENTS, GroupInfo, SpikeEvent, append_event, cut_events_after, load_groups, read_events
from .groups import check_groups_file
from .hook import LiveHook
from .rollback import KeptCheckpoints, RollbackSource, Snapshots
from .session import LiveSession
from .text import describe_rows, format_message, plural

__all__ = ["LiveAttribution", "group_shares", "online_groups", "rise_contributions", "SpikeCheck", "SpikeDetector",
           "spike_test", "trend_baseline", "EVENTS", "GroupInfo", "SpikeEvent", "append_event", "load_groups",
           "read_events", "cut_events_after", "check_groups_file", "LiveHook", "KeptCheckpoints", "RollbackSource",
           "Snapshots", "LiveSession", "describe_rows", "format_message", "plural"]
