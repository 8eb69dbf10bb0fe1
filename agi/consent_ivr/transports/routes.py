"""The AGI route table: the steps both transports serve under a fixed name instead of a flow.

Process AGI takes the route as its first argument (``AGI(consent-ivr.agi,<route>[,...])``), the
FastAGI server as the script path (``AGI(agi://host:4573/<route>[?...])``); anything else names a
flow. Each transport keeps its handlers in a table keyed by these names
(`process_agi.ROUTE_HANDLERS`, `fastagi.routes.FastAgiRoutes.handlers`), so a route is added here
and then in both. No flow may take a route's id (the flow loader's ``RESERVED_IDS``).

On the process-AGI start path: this module imports nothing.
"""

from __future__ import annotations

#: ``gate,<purpose>`` / ``gate?purpose=<purpose>``: check the channel's consent variables
#: against the evidence store (`tracking.gate.GateStep`) and set ``CONSENT_GATE_<PURPOSE>``
#: (``open`` or ``closed``) and ``CONSENT_GATE_<PURPOSE>_REASON``.
GATE = "gate"
#: ``track[,name=value...]``: the call-tracking step of a hangup handler, in dead mode
#: (`tracking.step`): one tracking entry, GA4 only behind the gate; sets ``TRACKING_STATUS`` and
#: ``TRACKING_GA4``.
TRACK = "track"

#: Every route, by name: what it does.
ROUTES = {
    GATE: "check a purpose's consent against the evidence store; set CONSENT_GATE_<PURPOSE>",
    TRACK: "the hangup handler's call-tracking step; set TRACKING_STATUS and TRACKING_GA4",
}
