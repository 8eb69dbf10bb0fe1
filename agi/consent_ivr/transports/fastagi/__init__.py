"""The FastAGI server: one asyncio connection is one consent call, on the same engine and codec.

``AGI(agi://host:4573/<flow>[?lang=en])`` — the path after the host selects the flow
(``agi_network_script``) or a route (`transports.routes`: ``gate``, ``track``). The modules, by
job:

* `config` — `ServerConfig`, the ``--allow`` list, the descriptor limit;
* `server` — `FastAgiServer`: start, admission, reload, drain, watchers; `serve` runs one;
* `flows` — `FlowRegistry`: the served flows, reloaded as one table;
* `stream` — `AgiStream`: one connection's commands and answers, and its environment block;
* `call` — `CallPump`: a consent call's operations over its stream, its evidence via the writer;
* `routes` — `FastAgiRoutes`: the gate, the tracking step, a script that names no flow.

The names below are what `consent-ivr serve` and the tests' server harness use.
"""

from consent_ivr.transports.fastagi.config import ServerConfig, parse_allow
from consent_ivr.transports.fastagi.server import FastAgiServer, serve

__all__ = ["FastAgiServer", "ServerConfig", "parse_allow", "serve"]
