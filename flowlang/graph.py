"""`callflow graph`: the routing as Graphviz dot, for people who would rather look than read."""

from __future__ import annotations

from .diagnostics import only_flow_errors
from .model import Accept, Gather, Hangup, Program, Reject


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@only_flow_errors
def to_dot(program: Program) -> str:
    """Callers on the left, rules in the middle (in order), users, lines and refusals on the right."""
    out = [
        "digraph callflow {",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=10];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    nodes: dict[str, str] = {}

    def peer(kind: str, name: str | None) -> str:
        if kind == "any":
            key, label, shape = "from:any", "any caller", "ellipse"
        elif name is None:
            key, label, shape = f"from:{kind}:*", f"any {kind}", "ellipse"
        else:
            key, label = f"{kind}:{name}", f"{kind} {name}"
            shape = "ellipse" if kind == "user" else "box3d"
        if key not in nodes:
            nodes[key] = f"    {_q(key)} [label={_q(label)}, shape={shape}];"
        return key

    for name in program.users:
        peer("user", name)
    for name in program.lines:
        peer("line", name)
    edges: list[str] = []
    rule_nodes: list[str] = []
    for rule in program.rules:
        rid = f"rule:{rule.index}"
        what = ", ".join(str(m) for m in rule.matchers) or "any number"
        label = f"{rule.id}\nto {what}"
        if rule.conditions:
            label += "\nwhen " + " and ".join(c.text for c in rule.conditions)
        rule_nodes.append(f"    {_q(rid)} [label={_q(label)}, shape=box, style=rounded];")
        edges.append(f"    {_q(peer(rule.peer_kind, rule.peer_name))} -> {_q(rid)};")
        for n, attempt in enumerate(rule.plan, 1):
            t = attempt.terminal
            tag = str(n) if n == 1 else f"{n} (otherwise)"
            if isinstance(t, Accept):
                extra = f", {t.timeout:g}s" if t.timeout else ""
                for tg in t.targets:
                    lab = tag + extra
                    if tg.kind == "line":
                        tpl = rule.number_templates[n - 1][t.targets.index(tg)]
                        num = tg.number or (tpl.source if tpl is not None else None)
                        if num:
                            lab += f"\nnumber {num}"
                    edges.append(f"    {_q(rid)} -> {_q(peer(tg.kind, tg.name))} [label={_q(lab)}];")
            elif isinstance(t, Gather):
                for branch in t.branches:
                    for sub in branch.plan:
                        if isinstance(sub.terminal, Accept):
                            keys = ", ".join([f'"{k}"' for k in branch.keys] + (["nothing"] if branch.nothing else [])
                                             + (["else"] if branch.is_else else []))
                            for tg in sub.terminal.targets:
                                edges.append(f"    {_q(rid)} -> {_q(peer(tg.kind, tg.name))} "
                                             f"[label={_q(tag + ' gather ' + keys)}];")
            elif isinstance(t, Reject | Hangup):
                end = f"{rid}:end:{n}"
                text = f"reject {t.code}\n{t.reason}" if isinstance(t, Reject) else "hang up"
                rule_nodes.append(f"    {_q(end)} [label={_q(text)}, shape=octagon, color=firebrick];")
                edges.append(f"    {_q(rid)} -> {_q(end)} [label={_q(tag)}];")
    out.extend(nodes.values())
    out.extend(rule_nodes)
    out.extend(edges)
    out.append("}")
    return "\n".join(out) + "\n"
