"""The picture of a flow: the engine's state graph, collapsed into prompts and events.

(About 500 lines on purpose: which state is which node and each collapsing step argue
together that the picture still says what the engine does.)

Theory of operation
-------------------
`derive(flow, lang)` runs the whole-flow proof's exploration (`consent_ivr.lint.proof.prove` with
an observer), so every arrow is a transition the engine itself made, for every event the proof
tries (each key by the meaning the engine gave it, silence, a wrong key, a hang-up, a failure, a
record not written) — nothing is drawn by hand, and the picture cannot disagree with the
behaviour. Each explored state belongs to one *node*:

* ``START``: the initial variables and the answer;
* one node per prompt played before the decision: the first-layer segments, the full notice, the
  question (with the wait for a key after it), the re-prompts, a returning caller's reminders;
* ``RECALL`` (a flow with ``returning``): the look-up of the caller's earlier decision, asked for
  when the first segment has played out with no key pressed — one decision point whose arrows
  say what the engine made of each answer (honoured, or nothing to honour and why);
* one node per decision, its id the word upper case: ``GRANTED``, ``DECLINED``, ``PARTIAL``,
  ``NONE``, ``HUNGUP`` (none by a hang-up: no closing message) and ``ERROR`` — the record, the
  variables, the closing message. (A prompt id is lower case, so none can be taken for these.)

A transition between states of two nodes is an edge, labelled by what the event meant to the
engine; a transition inside one node (the wait after the question, the closing message) is not
drawn, except a key that leaves the caller in the prompt (an early accept: the prompt goes on).
Then the picture is made readable, each step keeping the meaning:

* labels between the same two nodes merge: ``silence (1st, 2nd)``;
* an event that leaves every prompt the same way is drawn once, from the pseudo-node ``ANY``
  (and so from the start and the look-up, where it leaves them that way too); a reminder gives
  the choice keys and the repeat key meanings of its own (keep, withdraw, change; the reminder
  again), drawn at the reminder, so a key needs the same way only at every other prompt;
* nodes of one role form a `Group` (first layer, full notice, the question and its re-prompts,
  the decisions, the returning caller's look-up and reminders): an event leaving every prompt
  of the group the same way is drawn once from the group, and so
  is a counted one (the n-th silence or wrong key leads to the same place from anywhere in it); a
  loop every member has is written in the group's title (and so is the same event into a member
  from another group's prompts: "0 repeat: the reminder again" during the full notice heard
  from a reminder); an event leading from one node to
  several members of a group is drawn once, to the group.

`consent_ivr.lint.flowdraw` turns a `FlowGraph` into Graphviz or Mermaid text.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from consent_ivr.engine import (
    RECALL_WAIT_MS,
    Action,
    Call,
    DigitPressed,
    Done,
    Event,
    Failed,
    Finish,
    HungUp,
    Persist,
    Phase,
    Play,
    PlayEnded,
    PlayFailed,
    RecordFailed,
    Role,
    WaitForDigit,
    WaitTimedOut,
    withdrawal_word,
)
from consent_ivr.flow.model import Flow, Prompt
from consent_ivr.lint.check import with_samples
from consent_ivr.lint.context import SAMPLES_PER_SECOND
from consent_ivr.lint.proof import prove

#: The ids of what is not a prompt are upper case: a prompt id is lower case (the flow schema).
START, ANY, RECALL = "START", "ANY", "RECALL"
#: Decisions, in drawing order (a node's id is the word upper case); `hungup` is `none` reached
#: by a hang-up.
OUTCOMES = ("granted", "declined", "partial", "none", "hungup", "error")
OUTCOME_IDS = frozenset(o.upper() for o in OUTCOMES)
NOTICE, FULL_NOTICE, QUESTION, DECISION = "NOTICE", "FULL_NOTICE", "QUESTION", "DECISION"
RETURNING = "RETURNING"
#: Edge kinds (the drawing styles them): a prompt played on, the look-up's answer, a key, a
#: counted silence or wrong key, a hang-up, a failure, the evidence store.
KINDS = ("play", "lookup", "key", "silence", "wrong", "hangup", "failure", "store")
#: Why the look-up honours nothing (`Call.looked_up`), in the picture's words.
NOT_HONOURED = {
    "none": "none found",
    "anonymous": "no caller number",
    "expired": "too old",
    "withdrawn": "withdrawn",
    "mixed": "mixed outcomes",
    "store_error": "a failed look-up",
    "timeout": "a slow look-up",
    "notice_changed": "another notice",
    "not_remembered": "an outcome not remembered",
    "recording": "a recording purpose",
}
#: A label base with ``{}`` names its details in it, joined by "or": ``1 or silence: keep``.
KEEP = "{}: keep"


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # "start" | "prompt" | "lookup" | "outcome" | "any"
    title: str
    detail: str  # the prompt id and how long it plays, or what the decision plays
    group: str | None = None


@dataclass(frozen=True)
class Edge:
    source: str  # a node's or a group's id
    target: str
    label: str
    kind: str


@dataclass(frozen=True)
class Group:
    id: str
    title: str
    members: tuple[str, ...]


@dataclass
class FlowGraph:
    flow: str  # the flow's label, id@version
    language: str
    nodes: list[Node]
    groups: list[Group]
    edges: list[Edge]
    states: int  # the engine states explored
    transitions: int
    proof_holds: bool

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


class GraphTooLarge(Exception):
    """The exploration stopped at its bound: there is no whole graph to draw."""


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


# ------------------------------------------------------------------------ the raw graph
class _Collector:
    """The proof's observer: every explored transition as an edge between two nodes."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.caps = flow.choice.caps
        self.node_of: dict[int, str] = {0: START}
        #: (source, target, kind, label base) -> label details (counts), merged later
        self.raw: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        self.roles: dict[str, Role] = {}

    def __call__(
        self,
        sid: int,
        call: Call,
        action: Action,
        event: Event,
        cid: int,
        child: Call,
        nxt: Action,
    ) -> None:
        src = self.node_of[sid]
        dst = self.node_of.get(cid)
        if dst is None:
            dst = self.node_of[cid] = self._node(child, nxt, src)
        described = self._describe(event, child, src, dst)
        if described is not None:
            kind, base, detail = described
            details = self.raw[(src, dst, kind, base)]
            if detail:
                details.add(detail)

    def _node(self, call: Call, action: Action, parent: str) -> str:
        """The node a state belongs to (a function of the state: see the module docstring)."""
        phase = call.phase
        if phase in (Phase.INITIAL_VARS, Phase.ANSWER):
            return START
        if phase is Phase.RECALL:
            return RECALL
        if phase is Phase.PLAYING and isinstance(action, Play):
            self.roles[action.prompt_id] = action.role
            return action.prompt_id
        if isinstance(action, WaitForDigit):
            return self.flow.questions[call.question_index].prompt.id
        if isinstance(action, Persist):
            decision = action.decision
            hung_up = decision.status == "none" and decision.hung_up
            return "HUNGUP" if hung_up else decision.status.upper()
        status = action.status if isinstance(action, Finish) else call.status
        if parent in OUTCOME_IDS and parent in (
            status.upper(),
            "HUNGUP" if status == "none" else "",
        ):
            return parent
        return status.upper()

    def _describe(
        self, event: Event, child: Call, src: str, dst: str
    ) -> tuple[str, str, str] | None:
        """(kind, label, count) of a transition, or None if it is not drawn."""
        caps = self.caps
        if src == RECALL and not isinstance(event, HungUp):  # the look-up answered
            if child.reminding and child.honoured is not None:
                return ("lookup", f"honoured: {child.honoured.outcome} earlier, this notice", "")
            why = child.looked_up
            return ("lookup", "nothing to honour", NOT_HONOURED.get(why, why.replace("_", " ")))
        if isinstance(event, HungUp):
            return None if src in OUTCOME_IDS else ("hangup", "hang-up", "")
        if isinstance(event, (PlayFailed, Failed)):
            return None if src in OUTCOME_IDS else ("failure", "failure (playback or AGI)", "")
        if isinstance(event, RecordFailed):
            return None if src == dst else ("store", "the record cannot be written", "")
        if isinstance(event, WaitTimedOut):
            if dst in OUTCOME_IDS:
                why = f"silence, past the caps (silence {caps.noinput}, {caps.total} in all)"
                return ("silence", why, "")
            return ("silence", "silence", _ordinal(child.reprompts[0]))
        digit = event.digit if isinstance(event, (DigitPressed, PlayEnded)) else None
        if digit is None:  # a prompt played to its end, a command done, the record written
            if src == dst or src in OUTCOME_IDS:
                return None
            if self.roles.get(src) is Role.REMINDER:  # silence keeps the earlier decision
                return ("key", KEEP, "silence")
            if dst == RECALL:
                return ("play", "played out, no key yet", "")
            if isinstance(event, Done):
                return ("play", "answered", "")
            if self.roles.get(src) is Role.FULL and self.roles.get(dst) is not Role.FULL:
                return ("play", "played: back where the caller was", "")
            return ("play", "", "")
        key = child.last_key
        meaning = key.meaning if key is not None else "invalid"
        withdrawal = self.flow.is_withdrawal
        if meaning == "accept":
            word = "withdraw" if withdrawal else "agree"
            return ("key", f"{digit} {word} (once the notice was heard)", "")
        if meaning == "decline":
            return ("key", f"{digit} {'cancel' if withdrawal else 'decline'}", "")
        if meaning == "early_accept":
            label = (
                f"{digit} too early (the notice not yet heard): the prompt goes on"
                f" ({caps.early_accepts} times at most, then {digit} is not heard"
                " until the notice ends)"
            )
            return ("key", label, "")
        if meaning == "keep":
            return ("key", KEEP, digit)
        if meaning == "withdraw":
            return ("key", f"{digit} withdraw: recorded as declined", "")
        if meaning == "change":
            return ("key", f"{digit} change: the rest of the notice, then the question", "")
        if meaning == "repeat" and child.reminding:
            return (
                "key",
                f"{digit} repeat: the reminder again ({caps.replays} replays in all)",
                "",
            )
        if meaning == "repeat":
            return ("key", f"{digit} repeat the notice ({caps.replays} replays in all)", "")
        if meaning == "full_notice":
            return ("key", f"{digit} all information ({caps.replays} replays in all)", "")
        if dst in OUTCOME_IDS:
            why = f"wrong key, past the caps (wrong key {caps.nomatch}, {caps.total} in all)"
            return ("wrong", why, "")
        return ("wrong", "wrong key", _ordinal(child.reprompts[1]))


# ----------------------------------------------------------------------------- derive
def derive(flow: Flow, lang: str, *, max_states: int = 200_000) -> FlowGraph:
    """The flow's picture in `lang`, from the engine's exploration (prompts without audio get
    lengths estimated from their texts, marked ``~``)."""
    timed = with_samples(flow, lang)
    collector = _Collector(timed)
    result = prove(timed, lang, max_states=max_states, observe=collector)
    if result.states >= max_states:
        raise GraphTooLarge(
            f"flow {flow.id}: the exploration stopped after {result.states:,} call states;"
            " there is no whole graph to draw (consent-ivr lint shows why)"
        )
    nodes, groups = _nodes(flow, timed, lang, collector)
    edges = collapse(nodes, groups, collector.raw)
    return FlowGraph(
        flow.label, lang, nodes, groups, edges, result.states, result.transitions, result.ok
    )


def _seconds(original: Prompt, timed: Prompt, lang: str) -> str:
    estimated = original.samples.get(lang, 0) <= 0
    return f"{'~' if estimated else ''}{timed.samples[lang] / SAMPLES_PER_SECOND:.1f} s"


def _nodes(flow: Flow, timed: Flow, lang: str, seen: _Collector) -> tuple[list[Node], list[Group]]:
    """The nodes the exploration reached, in flow order, and their groups."""
    reached = set(seen.node_of.values())
    choice, t_choice = flow.choice, timed.choice
    nodes = [Node(START, "start", "the call", "variables none, answered")]
    groups: list[Group] = []

    def prompts(group: str, title: str, parts: list[tuple[str, Prompt, Prompt, str]]) -> None:
        members = []
        for name, original, prompt, extra in parts:
            if prompt.id in reached:
                detail = f"{prompt.id} · {_seconds(original, prompt, lang)}{extra}"
                nodes.append(Node(prompt.id, "prompt", name, detail, group))
                members.append(prompt.id)
        if members:
            groups.append(Group(group, title, tuple(members)))

    n = len(flow.notice)
    prompts(
        NOTICE,
        "first layer (notice): every caller hears it",
        [
            (f"notice {i}/{n}", o, t, "")
            for i, (o, t) in enumerate(zip(flow.notice, timed.notice, strict=True), 1)
        ],
    )
    returning, t_returning = flow.returning, timed.returning
    if returning is not None and t_returning is not None and RECALL in reached:
        first = flow.notice[0].id
        wait = f"while {first} plays, then at most {RECALL_WAIT_MS} ms more"
        nodes.append(Node(RECALL, "lookup", "look-up: an earlier decision?", wait, RETURNING))
        reminders = [
            (f"reminder: {o} earlier", returning.reminder[o], t_returning.reminder[o], "")
            for o in returning.remember
            if o in returning.reminder
        ]
        title = (
            f"returning caller (look-up while {first} plays): a decision under this notice,"
            f" at most {returning.max_age_days} days old"
        )
        prompts(RETURNING, title, reminders)
        if groups[-1].id == RETURNING:  # the look-up heads its frame
            groups[-1] = Group(RETURNING, title, (RECALL, *groups[-1].members))
        else:
            groups.append(Group(RETURNING, title, (RECALL,)))
    n = len(flow.full_notice)
    pairs = zip(flow.full_notice, timed.full_notice, strict=True)
    prompts(
        FULL_NOTICE,
        "full notice: on request",
        [(f"full notice {i}/{n}", o, t, "") for i, (o, t) in enumerate(pairs, 1)],
    )
    wait = f", then waits {choice.timeout_ms / 1000:g} s"
    parts = [
        (f"question: {q.purpose}", q.prompt, tq.prompt, wait)
        for q, tq in zip(flow.questions, timed.questions, strict=True)
    ]
    for name, originals, prompts_ in (
        ("after silence", choice.noinput, t_choice.noinput),
        ("after a wrong key", choice.nomatch, t_choice.nomatch),
    ):
        n = len(originals)
        parts += [
            (f"{name} {i}/{n}", o, t, "")
            for i, (o, t) in enumerate(zip(originals, prompts_, strict=True), 1)
        ]
    caps = choice.caps
    prompts(
        QUESTION,
        f"the question{'s' if len(flow.questions) > 1 else ''} and re-prompts (caps: silence"
        f" {caps.noinput}, wrong key {caps.nomatch}, {caps.total} re-prompts in all)",
        parts,
    )
    decided = []
    for status in OUTCOMES:
        if status.upper() not in reached:
            continue
        word = withdrawal_word(status) if flow.is_withdrawal else status
        title = {"hungup": "hung up: none", "none": "none: no decision"}.get(status, word)
        close = flow.close.get(status)
        if status == "hungup" or close is None:
            detail = "no closing message"
        else:
            detail = f"{close.id} · {_seconds(close, timed.close[status], lang)}"
        group = None if status == "error" else DECISION
        nodes.append(Node(status.upper(), "outcome", title, detail, group))
        if group:
            decided.append(status.upper())
    if decided:
        groups.append(
            Group(DECISION, "the decision, recorded in the evidence store", tuple(decided))
        )
    return nodes, groups


# ---------------------------------------------------------------------------- collapse
#: An edge before it is drawn: (source, target, kind, label) -> the counts its label names.
_Edges = dict[tuple[str, str, str, str], frozenset[str]]


def _label(base: str, details: frozenset[str]) -> str:
    if not details:
        return base
    order = sorted(details, key=lambda d: (len(d), d))
    if "{}" in base:
        return base.format(" or ".join(order))
    return f"{base} ({', '.join(order)})"


def _move(
    edges: _Edges, old: set[tuple[str, str, str, str]], new: tuple[str, str, str, str]
) -> None:
    details = frozenset().union(*(edges.pop(e) for e in old))
    edges[new] = edges.get(new, frozenset()) | details


def collapse(
    nodes: list[Node],
    groups: list[Group],
    raw: dict[tuple[str, str, str, str], set[str]],
) -> list[Edge]:
    """The raw node-to-node edges made readable (see the module docstring); adds the `any`
    node to `nodes` and notes to the titles in `groups` where it uses them."""
    edges: _Edges = {e: frozenset(d) for e, d in raw.items()}
    prompt_nodes = {n.id for n in nodes if n.kind == "prompt"}
    reminders = {m for g in groups if g.id == RETURNING for m in g.members} & prompt_nodes
    # an event that leaves every prompt the same way: once, from "any" (a key: every prompt
    # but a reminder, which gives keys meanings of its own, drawn at it)
    by_way: dict[tuple[str, str, str, frozenset[str]], set[str]] = defaultdict(set)
    for (s, t, k, b), d in edges.items():
        if s in prompt_nodes or s in (START, RECALL):
            by_way[(t, k, b, d)].add(s)
    for (t, k, b, _d), sources in by_way.items():
        needed = prompt_nodes - reminders if k == "key" else prompt_nodes
        if needed and needed <= sources:
            _move(edges, {(s, t, k, b) for s in sources}, (ANY, t, k, b))
    if any(e[0] == ANY for e in edges):
        nodes.append(Node(ANY, "any", "at any prompt", "the same event, the same way"))
    named = {m: g.title.split(":")[0] for g in groups for m in g.members}
    for n, g in enumerate(groups):
        notes = _group_rules(edges, g, named)
        if notes:
            groups[n] = Group(g.id, "; ".join([g.title, *notes]), g.members)
    # one node to several members of a group: once, to the group
    group_of = {m: g for g in groups for m in g.members}
    into: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    for s, t, k, b in edges:
        if t in group_of and s not in group_of[t].members:
            into[(s, group_of[t].id, k, b)].add(t)
    for (s, g_id, k, b), targets in into.items():
        if len(targets) > 1:
            _move(edges, {(s, t, k, b) for t in targets}, (s, g_id, k, b))
    order: dict[str, float] = {n.id: i for i, n in enumerate(nodes)}
    order.update({g.id: order[g.members[0]] - 0.5 for g in groups})
    return [
        Edge(s, t, _label(b, edges[(s, t, k, b)]), k)
        for s, t, k, b in sorted(
            edges, key=lambda e: (order.get(e[0], -1), KINDS.index(e[2]), order.get(e[1], -1), e[3])
        )
    ]


def _group_rules(edges: _Edges, g: Group, group_of: dict[str, str]) -> list[str]:
    """The rules for the edges out of one group's members (the look-up aside: it is no prompt);
    the notes for its title. `group_of`: a member's group, by the title's first words."""
    members = set(g.members) - {RECALL}
    notes: list[str] = []
    if len(members) < 2:
        return notes
    # the same way out of every member (or a counted event out of several): from the group
    out: dict[tuple[str, str, str, frozenset[str]], set[str]] = defaultdict(set)
    for (s, t, k, b), d in edges.items():
        if s in members and t not in members:
            out[(t, k, b, d)].add(s)
    for (t, k, b, _d), sources in out.items():
        if sources == members or (k in ("silence", "wrong") and len(sources) > 1):
            _move(edges, {(s, t, k, b) for s in sources}, (g.id, t, k, b))
    if g.id == QUESTION:
        # a re-prompt whose every way out (but back to the question) is the question's own
        head = g.members[0]
        at_head = {(t, k, b): d for (s, t, k, b), d in edges.items() if s == head}
        same = False
        for m in g.members[1:]:
            own = {e: d for e, d in edges.items() if e[0] == m and e != (m, head, "play", "")}
            ways = {(t, k, b): d for (_s, t, k, b), d in own.items()}
            if own and all(w in at_head and d <= at_head[w] for w, d in ways.items()):
                for e in own:
                    del edges[e]
                same = True
        if same:
            notes.append("a key during a re-prompt counts as at the question")
    # a loop every member has: said once, in the group's title
    loops: dict[tuple[str, str, frozenset[str]], set[str]] = defaultdict(set)
    for (s, t, k, b), d in edges.items():
        if s == t and s in members:
            loops[(k, b, d)].add(s)
    for (k, b, d), sources in sorted(loops.items(), key=lambda item: item[0][1]):
        if sources == members:
            for s in sources:
                del edges[(s, s, k, b)]
            # the same event into a member from another group's prompts is the same move
            # (back to that member): said there too ("the reminder again" from the full notice)
            back = {e for e, d2 in edges.items() if e[1:] in {(m, k, b) for m in members}}
            back = {e for e in back if e[0] not in members and edges[e] == d and e[0] in group_of}
            heard = sorted({group_of[e[0]] for e in back})
            for e in back:
                del edges[e]
            also = "".join(f", and in the {h} heard from one" for h in heard)
            notes.append(f"at each{also}: {_label(b, d)}")
    return notes
