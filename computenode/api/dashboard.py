"""The operator's page at `/`: plain server-rendered HTML, no external assets, readable without JavaScript."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from computenode.model import ResourceUsageData

if TYPE_CHECKING:
    from computenode.api.base import NodeView
    from computenode.store import Execution

_CSS = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}
.bar{width:220px;height:12px;background:#eee;display:inline-block;position:relative;vertical-align:middle}
.bar span{position:absolute;top:0;bottom:0;left:0}.run{background:#2a7}.res{background:#fc4}
.ok{color:#2a7}.bad{color:#c33}code{font-size:.95em}.nw{white-space:nowrap}"""


PAGE = 100  # active executions shown
REFUSALS = 10  # the network's recent refusals shown (the node keeps 50)
_WIRE_KEYS = ("ExecutionID", "JobID", "Stage")  # progress fields the row already shows


def size(n: float) -> str:
    """Bytes in binary units with one decimal: 1.5 GiB, 100.0 MiB, 512 B."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def duration(seconds: float) -> str:
    """2h 5m, 3m 20s, 4.2 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m}m" if h else f"{m}m {s}s"


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _fmt(resource: str, value: float) -> str:
    if resource in ("Memory", "Disk"):
        return size(value)
    if resource == "CPU":
        return f"{value:g} cores" if value != 1 else "1 core"
    return f"{value:g}"  # GPUs are counted


def _detail(key: str, value: object) -> str:
    """A progress field for people: sizes in binary units, rates per second, times as durations."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        low = key.lower()
        if "rate" in low:
            return f"{size(value)}/s"
        if "bytes" in low or "size" in low:
            return size(value)
        if "elapsed" in low or "seconds" in low:
            return duration(value)
    if isinstance(value, bool):
        return yes_no(value)
    return html.escape(str(value))


def progress_text(progress: dict[str, object] | None) -> str:
    if not progress:
        return ""
    details = ", ".join(
        f"{html.escape(k)} {_detail(k, v)}"
        for k, v in progress.items()
        if k not in _WIRE_KEYS and v not in ("", None)
    )
    stage = html.escape(str(progress.get("Stage", "")))
    return f"<b>{stage}</b>" + (f" ({details})" if details else "")


def _bars(total: ResourceUsageData, running: ResourceUsageData, reserved: ResourceUsageData) -> str:
    rows = []
    t, r, p = total.to_wire(), running.to_wire(), reserved.to_wire()
    for key in ("CPU", "Memory", "Disk", "GPU"):
        if not t[key]:
            continue
        run_pct = min(100.0, 100 * r[key] / t[key])
        res_pct = min(100.0 - run_pct, 100 * p[key] / t[key])
        # The text column says everything the bar shows, for a reader without CSS.
        rows.append(
            f"<tr><th>{key}</th><td><span class=bar><span class=run style='width:{run_pct:.1f}%'></span>"
            f"<span class=res style='left:{run_pct:.1f}%;width:{res_pct:.1f}%'></span></span></td>"
            f"<td>running {_fmt(key, r[key])} · reserved {_fmt(key, p[key])} · total {_fmt(key, t[key])}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _links(ex: Execution) -> str:
    """The execution's record, its logs and, once published, its results."""
    base = f"/api/v1/executions/{html.escape(ex.id)}"
    links = [f"<a href='{base}'>details</a>", f"<a href='{base}/logs'>stdout</a>", f"<a href='{base}/logs?stream=stderr'>stderr</a>"]  # fmt: skip
    pub = ex.published
    if pub is not None and pub.url:
        links.append(f"<a href='{html.escape(pub.url)}'>results</a>")
    elif pub is not None and pub.cid:
        links.append(f"results: IPFS <code>{html.escape(pub.cid)}</code>")
    return " · ".join(links)


def _execution_rows(executions: list[Execution], progress: Callable[[str], dict[str, Any] | None]) -> str:
    now = time.time()
    rows = []
    for ex in executions:
        end = ex.updated_at if ex.state.is_terminal else now
        note = (
            html.escape(ex.comment)
            if ex.state.is_terminal
            else progress_text(progress(ex.id)) or html.escape(ex.comment)
        )
        rows.append(
            f"<tr id='ex-{html.escape(ex.id)}'><td><code>{html.escape(ex.id)}</code></td><td><code>{html.escape(ex.job_id)}</code></td>"
            f"<td>{ex.shard_index}</td><td>{ex.state.value}</td><td>{duration(end - ex.created_at)}</td>"
            f"<td>{note}</td><td>{_links(ex)}</td></tr>"
        )
    names = ("Execution", "Job", "Shard", "State", "Duration", "Progress or comment", "Links")
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in names) + "</tr>"
    return "<table>" + head + "".join(rows) + "</table>" if rows else "<p>None.</p>"


def peer_of(address: str) -> str:
    """The peer ID a multiaddr ends with (/p2p/ID, or the older /ipfs/ID); "" when none."""
    parts = address.rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] in ("p2p", "ipfs") else ""


def transport_of(address: str) -> str:
    """A multiaddr without the /p2p/ID it ends with: where the peer is dialled."""
    parts = address.rstrip("/").split("/")
    return "/".join(parts[:-2]) if peer_of(address) else address


def short_peer(peer: str) -> str:
    """A peer ID as libp2p abbreviates it, Qm*abcdef: the first two characters say its kind, the
    last six tell peers apart (every Ed25519 ID starts 12D3KooW, so a prefix would not)."""
    return peer if len(peer) <= 10 else f"{peer[:2]}*{peer[-6:]}"


def _when(at: object, now: float) -> str:
    if not isinstance(at, int | float) or isinstance(at, bool) or not at:
        return html.escape(str(at or "-"))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    return f"{stamp} ({duration(max(0.0, now - at))} ago)"


def network_section(net: dict[str, Any]) -> str:
    """The libp2p side for people: this peer, its requesters (configured ones and any others that
    made offers), connected or not and why, what each asked for, and the latest refusals. Every
    peer ID, address, error and reason comes from outside the node and is escaped."""
    e = html.escape
    peers = [p for p in net.get("Peers") or [] if isinstance(p, dict)]
    connected = {str(c) for c in net.get("Connected") or []}
    counts: dict[str, Any] = net.get("Requesters") or {}
    configured = {peer_of(str(p.get("Address", ""))) for p in peers}
    listen = ", ".join(f"<code>{e(str(a))}</code>" for a in net.get("Listen") or []) or "(nothing)"
    others = len(connected - configured)
    rows = []
    for p in peers:
        pid = peer_of(str(p.get("Address", "")))
        rows.append(
            (pid, str(p.get("Address", "")), True, bool(p.get("Connected")), str(p.get("Error") or ""))
        )
    for pid in sorted(set(counts) - configured):
        rows.append((pid, "", False, pid in connected, ""))
    # The address without its /p2p/ID, which the first column shows: the counts stay on screen.
    names = ("Requester", "Configured", "Connected", "Offers", "Bids", "Refused", "Calls", "Address", "Last error")  # fmt: skip
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in names) + "</tr>"
    body = []
    for pid, addr, is_configured, is_connected, error in rows:
        c = counts.get(pid) or {}
        where = transport_of(addr)
        body.append(
            f"<tr><td><code>{e(pid or '-')}</code></td><td>{yes_no(is_configured)}</td>"
            f"<td class={'ok' if is_connected else 'bad'}>{yes_no(is_connected)}</td>"
            + "".join(f"<td>{e(str(c.get(k, 0)))}</td>" for k in ("Offers", "Bids", "Refused", "Calls"))
            + f"<td>{f'<code>{e(where)}</code>' if where else '-'}</td><td>{e(error) if error else '-'}</td></tr>"
        )
    requesters = (
        "<table>" + head + "".join(body) + "</table>" if body else "<p>None configured, none seen.</p>"
    )
    now = time.time()
    refusals = [r for r in net.get("RecentRefusals") or [] if isinstance(r, dict)]
    refusal_rows = "".join(
        f"<tr><td class=nw>{_when(r.get('At'), now)}</td>"
        f"<td><code title='{e(str(r.get('Peer', '')))}'>{e(short_peer(str(r.get('Peer', ''))))}</code></td>"
        f"<td class=nw><code>{e(str(r.get('JobID') or '-'))}</code></td><td>{e(str(r.get('Reason', '')))}</td></tr>"
        for r in refusals[:REFUSALS]
    )
    refused = (
        "<table><tr><th>Time</th><th>Peer</th><th>Job</th><th>Reason</th></tr>" + refusal_rows + "</table>"
        if refusal_rows
        else "<p>None.</p>"
    )
    shown = f" (newest {REFUSALS} of {len(refusals)})" if len(refusals) > REFUSALS else ""
    return (
        f"<h2 id=network>Network</h2><p>Peer ID <code id=peer-id>{e(str(net.get('PeerID', '')))}</code>"
        f" · Listening on {listen} · Accepts any requester {yes_no(bool(net.get('AcceptAnyRequester')))}"
        f" · Other connected peers {others}</p>"
        f"<h3>Requesters</h3>{requesters}<h3>Recent refusals{shown}</h3>{refused}"
    )


async def render(node: NodeView, readiness: tuple[int, dict[str, object]]) -> str:
    cap = node.capacity()
    # Pages, not tables: the page reloads every 5 s, on a node that may hold 100,000 executions.
    active = await node.active_executions(limit=PAGE)
    recent = [e for e in (await node.execution_page(limit=25)).items if e.state.is_terminal]
    code, ready = readiness
    checks = ready["checks"]
    assert isinstance(checks, dict)
    check_rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td class={'ok' if c['ok'] else 'bad'}>"
        f"{'ok' if c['ok'] else 'down: ' + html.escape(str(c.get('reason', 'down')))}</td></tr>"
        for name, c in checks.items()
    )
    labels = ", ".join(f"{html.escape(k)}={html.escape(v)}" for k, v in sorted(node.labels.items()))
    node_id = html.escape(node.node_id)
    status = f"<b class={'ok' if code == 200 else 'bad'}>{html.escape(str(ready['status']))}</b>"
    net = node.network_status()
    network = network_section(net) if net is not None else ""
    counts = f"Running {cap.running_executions} · Queued {cap.queued_executions} · Draining {yes_no(node.draining)}"
    return f"""<!doctype html><html><head><meta charset=utf-8><title>computenode {node_id}</title>
<meta http-equiv=refresh content=5><style>{_CSS}</style></head><body>
<h1>computenode <code id=node-id>{node_id}</code></h1>
<p>Labels: {labels or "(none)"} · Readiness: {status}
· {counts}</p>
<h2>Capacity</h2>{_bars(cap.total, cap.running, cap.reserved)}
<h2>Active executions</h2>{_execution_rows(active, node.events.latest_progress)}
<h2>Recent executions</h2>{_execution_rows(recent, node.events.latest_progress)}
{network}<h2>Dependencies</h2><table>{check_rows}</table>
</body></html>"""
