"""The posture report as one self-contained HTML page (inline CSS and SVG, no external assets).

Every value from the deployment or the declaration is HTML-escaped. The page
opens with one sentence a non-engineer can act on, a bar chart of the level
per family, and per family the controls with their evidence and what stands
between it and the next level.
"""

from __future__ import annotations

from html import escape

from strongroom.posture.assess import LEVEL_NAMES, Assessment, FamilyResult

__all__ = ["render_html"]

_STATUS_CLASS = {"met": "ok", "declared": "decl", "not met": "bad", "unknown": "unk"}
_BAR_COLOURS = {0: "#b42318", 1: "#d9480f", 2: "#e67700", 3: "#2f9e44", 4: "#1971c2",
                5: "#5f3dc4"}

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:28px 0 8px}
.lead{font-size:17px;background:#fff;border-left:6px solid #1971c2;padding:14px 18px;
border-radius:6px}
.muted{color:#5c6670;font-size:13px}
.card{background:#fff;border-radius:8px;padding:14px 18px;margin:12px 0;
box-shadow:0 1px 2px rgba(0,0,0,.06)}
table{border-collapse:collapse;width:100%;font-size:14px}
td,th{padding:6px 8px;border-bottom:1px solid #eceef1;vertical-align:top;text-align:left}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
white-space:nowrap}
.ok{background:#d3f9d8;color:#2b8a3e}.bad{background:#ffe3e3;color:#c92a2a}
.decl{background:#e7f5ff;color:#1864ab}.unk{background:#f1f3f5;color:#495057}
.lvl{font-weight:700}
.legend span{margin-right:14px}
"""


def _bar_chart(a: Assessment) -> str:
    row_h, label_w, bar_w = 30, 260, 560
    height = row_h * len(a.families) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 60}" '
             f'height="{height}" role="img" aria-label="security level per control family">']
    for lvl in range(6):
        x = label_w + bar_w * lvl / 5
        parts.append(f'<line x1="{x:.0f}" y1="0" x2="{x:.0f}" y2="{height - 24}" '
                     'stroke="#dee2e6"/>')
        parts.append(f'<text x="{x:.0f}" y="{height - 8}" font-size="12" text-anchor="middle" '
                     f'fill="#5c6670">{"SL" + str(lvl) if lvl else "0"}</text>')
    for i, f in enumerate(a.families):
        y = i * row_h + 6
        width = bar_w * f.level / 5
        colour = _BAR_COLOURS[f.level]
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" font-size="13" text-anchor="end">'
                     f'{escape(f.title)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(width, 2):.0f}" height="20" '
                     f'rx="3" fill="{colour}"><title>{escape(f.title)}: SL{f.level}</title></rect>')
        parts.append(f'<text x="{label_w + max(width, 2) + 6:.0f}" y="{y + 15}" font-size="12" '
                     f'fill="#1b1f24">SL{f.level}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _family(f: FamilyResult) -> str:
    rows = []
    for c in f.controls:
        cls = _STATUS_CLASS.get(c.status, "unk")
        rows.append(f"<tr><td>{escape(c.id)}</td><td>SL{c.level}</td><td>{escape(c.title)}"
                    f"<div class=muted>{escape(c.source)}</div></td>"
                    f'<td><span class="badge {cls}">{escape(c.status)}</span></td>'
                    f"<td>{escape(c.evidence)}</td></tr>")
    nxt = "" if f.level >= 5 else (f"<p><b>To reach SL{f.level + 1}:</b> {escape(f.next_step)}"
                                   "</p>")
    return (f'<div class=card><h2>{escape(f.title)} — <span class=lvl>SL{f.level}</span></h2>'
            f"{nxt}<table><tr><th>id</th><th>needed at</th><th>control</th><th>status</th>"
            f"<th>evidence</th></tr>{''.join(rows)}</table></div>")


def render_html(a: Assessment) -> str:
    """The report page."""
    weakest = [f.title for f in a.families if f.level == a.level]
    decl = a.declaration
    rt = a.facts.redteam
    if rt:
        results = rt.get("results", [])
        counts = {o: sum(1 for r in results if r.get("outcome") == o)
                  for o in ("blocked", "detected", "missed", "unsupported")}
        redteam = (f"Last red-team run {escape(str(rt.get('started')))}: "
                   f"{counts['blocked']} attacks blocked, {counts['detected']} detected, "
                   f"<b>{counts['missed']} missed</b> out of {len(results)}.")
    else:
        redteam = "No red-team run is stored for this deployment."
    standing = "below SL1" if a.level == 0 else f"at {LEVEL_NAMES[a.level]}"
    lead = (f"This deployment stands <b>{escape(standing)}</b>. "
            f"Its weakest area{'s are' if len(weakest) > 1 else ' is'} "
            f"<b>{escape(', '.join(weakest))}</b>: an attacker goes where protection is "
            f"lowest, so the overall level is the lowest of the families. {redteam}")
    notes = "".join(f"<li>{escape(n)}</li>" for n in a.facts.notes)
    claims = (f"Declaration: {escape(decl.source)}"
              + (f", by {escape(decl.assessor)}" if decl.assessor else "")
              + ". Declared items are claims made by a person and are shown as "
                "<span class='badge decl'>declared</span>; software did not verify them."
              if decl.source else "No declaration was given: facility, vetting depth and "
              "network isolation count as not in place.")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>strongroom security posture</title><style>{_CSS}</style></head><body><main>"
        "<h1>Security posture against RAND's security levels</h1>"
        f"<div class=muted>generated {escape(a.generated)} · data directory "
        f"{escape(a.facts.home)}</div>"
        f"<p class=lead>{lead}</p>"
        "<p class=muted>RAND's levels (Securing AI Model Weights, 2024): SL1 stops amateurs, SL2 "
        "professional opportunists, SL3 cybercrime syndicates and insiders, SL4 standard "
        "operations of state services, SL5 their top-priority operations. A level counts only "
        "when every control needed at that level and below is in place.</p>"
        f"<div class=card>{_bar_chart(a)}</div>"
        f"<p class=muted>{claims}</p>"
        + "".join(_family(f) for f in a.families)
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "<p class=legend><span class='badge ok'>met</span> verified from the running system "
          "<span class='badge decl'>declared</span> claimed in the declaration "
          "<span class='badge bad'>not met</span> <span class='badge unk'>unknown</span> could "
          "not be read (never counts)</p></main></body></html>")
