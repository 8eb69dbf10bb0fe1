"""Drawing a flow's picture (`consent_ivr.lint.flowgraph.FlowGraph`): Graphviz for SVG and PNG
(the `graphviz` package builds the DOT source; its ``dot`` program renders it), Mermaid text for
documents. Both say the same: a node per prompt (role, id, seconds), a box per group of prompts,
the decisions coloured, a returning caller's look-up a hexagon, an arrow per way the engine
moves between them.
"""

from __future__ import annotations

import textwrap

import graphviz

from consent_ivr.lint.flowgraph import ANY, DECISION, START, FlowGraph, Group, Node

#: Fill colours of the decisions, by the word (a node's id is the word upper case): granted green,
#: declined blue, the rest grey or red.
OUTCOME_COLOURS = {
    "granted": "#b7e1b5",
    "declined": "#bcd7f0",
    "partial": "#f3e3a3",
    "none": "#e0e0e0",
    "hungup": "#bdbdbd",
    "error": "#f4b6b6",
}
#: Edge styles by kind: (colour, style).
EDGE_STYLES = {
    "play": ("#333333", "solid"),
    "lookup": ("#6a1b9a", "solid"),
    "key": ("#1f5fa8", "solid"),
    "silence": ("#b26a00", "solid"),
    "wrong": ("#b26a00", "solid"),
    "hangup": ("#757575", "dashed"),
    "failure": ("#c62828", "dashed"),
    "store": ("#c62828", "dotted"),
}
FONT = "Helvetica"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def title_of(graph: FlowGraph) -> str:
    return (
        f"{graph.flow} [{graph.language}]: {graph.states:,} engine states and"
        f" {graph.transitions:,} transitions, collapsed into prompts and events"
        f"{'' if graph.proof_holds else ' (the proof does NOT hold: consent-ivr lint)'}"
    )


def _group_lines(g: Group) -> list[str]:
    lines: list[str] = []
    for part in g.title.split("; "):
        lines += _wrap(part, 60)
    return lines


# ------------------------------------------------------------------------------ Graphviz
def to_dot(graph: FlowGraph) -> graphviz.Digraph:
    """The picture as a Graphviz digraph (``.source`` is its DOT text)."""
    dot = graphviz.Digraph(graph.flow)
    dot.attr(
        compound="true",
        rankdir="TB",
        newrank="true",
        nodesep="0.35",
        ranksep="0.45",
        fontname=FONT,
        fontsize="13",
        labelloc="t",
        label="\n".join(_wrap(title_of(graph), 110)),
    )
    dot.attr("node", shape="box", style="rounded,filled", fillcolor="#fafafa", fontname=FONT)
    dot.attr("node", fontsize="11", margin="0.12,0.05")
    dot.attr("edge", fontname=FONT, fontsize="9", arrowsize="0.7")
    grouped = {m for g in graph.groups for m in g.members}
    for node in graph.nodes:
        if node.id not in grouped:
            _dot_node(dot, node)
    with dot.subgraph() as top:  # the call starts at the top, beside "at any prompt"
        top.attr(rank="same")
        top.node(START)
        if any(n.id == ANY for n in graph.nodes):
            top.node(ANY)
    for g in graph.groups:
        with dot.subgraph(name=f"cluster_{g.id}") as sub:
            sub.attr(
                label="\n".join(_group_lines(g)),
                style="rounded",
                color="#9e9e9e",
                fontsize="10",
                labeljust="l",
            )
            if g.id == DECISION:  # the decisions side by side, at the bottom
                sub.attr(rank="same")
            for member in g.members:
                _dot_node(sub, graph.node(member))
    groups = {g.id: g for g in graph.groups}
    for e in graph.edges:
        colour, style = EDGE_STYLES[e.kind]
        attrs = {"color": colour, "fontcolor": colour, "style": style}
        tail, head = e.source, e.target
        if tail in groups:
            members = groups[tail].members
            tail = members[len(members) // 2]
            attrs["ltail"] = f"cluster_{e.source}"
        if head in groups:  # the frame's first prompt (not the look-up heading it)
            members = groups[head].members
            head = next((m for m in members if graph.node(m).kind != "lookup"), members[0])
            attrs["lhead"] = f"cluster_{e.target}"
        if e.label:
            attrs["label"] = "\n".join(_wrap(e.label, 26))
        dot.edge(tail, head, **attrs)
    return dot


def _dot_node(dot: graphviz.Digraph, node: Node) -> None:
    label = f"{node.title}\n{node.detail}"
    if node.kind == "outcome":
        dot.node(node.id, label, fillcolor=OUTCOME_COLOURS[node.id.lower()], penwidth="1.5")
    elif node.kind == "lookup":
        dot.node(node.id, label, shape="hexagon", fillcolor="#efe3f5", color="#6a1b9a")
    elif node.kind == "any":
        dot.node(node.id, label, shape="ellipse", style="dashed", fillcolor="white")
    elif node.kind == "start":
        dot.node(node.id, label, shape="ellipse", fillcolor="#eeeeee")
    else:
        dot.node(node.id, label)


# ------------------------------------------------------------------------------- Mermaid
def _mid(node_id: str) -> str:
    return f"n_{node_id}"


def _text(lines: list[str]) -> str:
    return "<br/>".join(line.replace('"', "#quot;") for line in lines)


def to_mermaid(graph: FlowGraph) -> str:
    """The picture as a Mermaid flowchart, for Markdown documents."""
    out = [f"%% {title_of(graph)}", "flowchart TD"]
    grouped = {m for g in graph.groups for m in g.members}

    def node_line(node: Node, indent: str) -> str:
        text = _text([node.title, node.detail])
        if node.kind == "lookup":
            shape = f'{{{{"{text}"}}}}'
        elif node.kind in ("start", "any"):
            shape = f'(["{text}"])'
        else:
            shape = f'["{text}"]'
        return f"{indent}{_mid(node.id)}{shape}"

    for node in graph.nodes:
        if node.id not in grouped:
            out.append(node_line(node, "  "))
    for g in graph.groups:
        out.append(f'  subgraph {_mid(g.id)}["{_text(_group_lines(g))}"]')
        out += [node_line(graph.node(m), "    ") for m in g.members]
        out.append("  end")
    for e in graph.edges:
        arrow = "-.->" if EDGE_STYLES[e.kind][1] != "solid" else "-->"
        label = f'|"{_text(_wrap(e.label, 26))}"|' if e.label else ""
        out.append(f"  {_mid(e.source)} {arrow}{label} {_mid(e.target)}")
    for node in graph.nodes:
        if node.kind == "outcome":
            colour = OUTCOME_COLOURS[node.id.lower()]
            out.append(f"  style {_mid(node.id)} fill:{colour},stroke:#555")
    return "\n".join(out) + "\n"
