"""The operator's page at `/`: plain server-rendered HTML, no external assets, readable without JavaScript."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from computenode.model import ResourceUsageData
from computenode.model.quantity import format_bytes

if TYPE_CHECKING:
    from computenode.api.base import NodeView
    from computenode.store import Execution

_CSS = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}
.bar{width:220px;height:12px;background:#eee;display:inline-block;position:relative;vertical-align:middle}
.bar span{position:absolute;top:0;bottom:0;left:0}.run{background:#2a7}.res{background:#fc4}
.ok{color:#2a7}.bad{color:#c33}code{font-size:.95em}"""


PAGE = 100  # active executions shown


def _fmt(resource: str, value: float) -> str:
    if resource in ("Memory", "Disk"):
        return format_bytes(int(value)) if value else "0"
    return f"{value:g}"


def _bars(total: ResourceUsageData, running: ResourceUsageData, reserved: ResourceUsageData) -> str:
    rows = []
    t, r, p = total.to_wire(), running.to_wire(), reserved.to_wire()
    for key in ("CPU", "Memory", "Disk", "GPU"):
        if not t[key]:
            continue
        run_pct = min(100.0, 100 * r[key] / t[key])
        res_pct = min(100.0 - run_pct, 100 * p[key] / t[key])
        rows.append(
            f"<tr><th>{key}</th><td><span class=bar><span class=run style='width:{run_pct:.1f}%'></span>"
            f"<span class=res style='left:{run_pct:.1f}%;width:{res_pct:.1f}%'></span></span></td>"
            f"<td>running {_fmt(key, r[key])} · reserved {_fmt(key, p[key])} · total {_fmt(key, t[key])}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _execution_rows(executions: list[Execution]) -> str:
    now = time.time()
    rows = []
    for ex in executions:
        end = ex.updated_at if ex.state.is_terminal else now
        rows.append(
            f"<tr><td><code>{html.escape(ex.id)}</code></td><td><code>{html.escape(ex.job_id)}</code></td>"
            f"<td>{ex.shard_index}</td><td>{ex.state.value}</td><td>{end - ex.created_at:.1f} s</td>"
            f"<td>{html.escape(ex.comment)}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("Execution", "Job", "Shard", "State", "Duration", "Comment"))
    head = f"<tr>{head}</tr>"
    return "<table>" + head + "".join(rows) + "</table>" if rows else "<p>None.</p>"


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
        f"{'ok' if c['ok'] else html.escape(str(c.get('reason', 'down')))}</td></tr>"
        for name, c in checks.items()
    )
    labels = ", ".join(f"{html.escape(k)}={html.escape(v)}" for k, v in sorted(node.labels.items()))
    node_id = html.escape(node.node_id)
    status = f"<b class={'ok' if code == 200 else 'bad'}>{html.escape(str(ready['status']))}</b>"
    counts = f"Running {cap.running_executions} · Queued {cap.queued_executions} · Draining {node.draining}"
    return f"""<!doctype html><html><head><meta charset=utf-8><title>computenode {node_id}</title>
<meta http-equiv=refresh content=5><style>{_CSS}</style></head><body>
<h1>computenode <code id=node-id>{node_id}</code></h1>
<p>Labels: {labels or "(none)"} · Readiness: {status}
· {counts}</p>
<h2>Capacity</h2>{_bars(cap.total, cap.running, cap.reserved)}
<h2>Active executions</h2>{_execution_rows(active)}
<h2>Recent executions</h2>{_execution_rows(recent)}
<h2>Dependencies</h2><table>{check_rows}</table>
</body></html>"""
