"""The public connect pages, rendered as HTML strings, and the security headers they are served with.

Pure functions: no I/O, no JavaScript, no third-party resources. Every value that comes from outside is
escaped here, so callers pass plain text. All CSS is the one inline `<style>` holding `STYLESHEET`, which
the Content-Security-Policy allows by hash (no `unsafe-inline`, no `script-src`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass

STYLESHEET = """
:root {
  color-scheme: light dark;
  --bg: #ffffff; --fg: #1b1b1b; --muted: #4f4f4f; --line: #767676;
  --accent: #0b57d0; --on-accent: #ffffff; --error: #b3261e;
  --notice-bg: #eef3fc; --error-bg: #fdf0ef;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #121212; --fg: #ececec; --muted: #bdbdbd; --line: #8f8f8f;
    --accent: #8ab4f8; --on-accent: #0b1b33; --error: #f2b8b5;
    --notice-bg: #1a2433; --error-bg: #2d1716;
  }
}
*, *::before, *::after { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg); line-height: 1.5; overflow-wrap: break-word;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 1rem;
}
main { max-width: 32rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.75rem; line-height: 1.25; margin: 0 0 .5rem; }
h2 { font-size: 1.125rem; margin: 0 0 .5rem; }
p { margin: 0 0 1rem; }
.lead { color: var(--muted); }
.small { color: var(--muted); font-size: .9375rem; }
.notice, .error-summary { border-left: .3125rem solid var(--accent); background: var(--notice-bg);
  padding: .75rem 1rem; margin: 0 0 1.5rem; }
.notice p { margin: 0; }
.error-summary { border-color: var(--error); background: var(--error-bg); }
.error-summary ul { margin: 0; padding-left: 1.25rem; }
.error-summary li { margin: .25rem 0; }
.error-summary a { color: var(--error); font-weight: 600; display: inline-block; min-height: 44px;
  padding: .625rem 0; }
.field { margin: 0 0 1.5rem; }
label { display: block; font-weight: 600; margin: 0 0 .25rem; }
.hint { font-weight: 400; color: var(--muted); }
.help { color: var(--muted); margin: 0 0 .5rem; }
.field-error { color: var(--error); font-weight: 600; margin: 0 0 .5rem; }
input {
  display: block; width: 100%; min-height: 44px; padding: .5rem .75rem; margin: 0;
  font: inherit; font-size: 1rem; color: var(--fg); background: var(--bg);
  border: 2px solid var(--line); border-radius: .25rem;
}
input[aria-invalid="true"] { border-color: var(--error); }
.affixed { display: flex; align-items: stretch; }
.affixed input { flex: 1 1 auto; min-width: 0; }
.affix { display: flex; align-items: center; padding: 0 .5rem; white-space: nowrap; color: var(--muted);
  background: var(--notice-bg); border: 2px solid var(--line); }
.badge { display: inline-block; margin: 0 0 .5rem; padding: .125rem .5rem; font-weight: 600;
  border: 2px solid var(--accent); border-radius: .25rem; }
.scopes { margin: 0 0 1rem; padding-left: 1.25rem; }
.scopes code { font-size: .9375rem; }
button {
  display: block; width: 100%; min-height: 44px; padding: .625rem 1rem; margin: 0;
  font: inherit; font-weight: 600; color: var(--on-accent); background: var(--accent);
  border: 2px solid transparent; border-radius: .375rem; cursor: pointer;
}
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.error-summary:focus-visible, .error-summary a:focus-visible { outline-color: var(--error); }
.visually-hidden {
  position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; border: 0;
  overflow: hidden; clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap;
}
"""

STYLE_HASH = base64.b64encode(hashlib.sha256(STYLESHEET.encode("utf-8")).digest()).decode("ascii")
_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_GONE_HEADING = "This link is no longer valid"
_LOCKED_HEADING = "This link is locked"


@dataclass(frozen=True)
class FieldView:
    """One input on the connect page. `value` re-fills a non-secret field after a failed submit."""

    name: str
    label: str
    help: str
    secret: bool
    required: bool
    placeholder: str | None = None
    value: str = ""
    error: str | None = None
    prefix: str | None = None  # text shown before the input, e.g. https://
    suffix: str | None = None  # text shown after it, e.g. .zendesk.com


def input_name(field_name: str) -> str:
    """The form input name (and id) for a provider field; the prefix keeps fields apart from id/token."""
    return f"f_{field_name}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLESHEET}</style>\n</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def _error_summary(fields: list[FieldView], form_error: str | None) -> str:
    items = "".join(f'<li><a href="#{_e(input_name(f.name))}">{_e(f.error)}</a></li>\n' for f in fields if f.error)
    return (
        '<div class="error-summary" role="alert" aria-labelledby="error-summary-title" tabindex="-1" autofocus>\n'
        '<h2 id="error-summary-title">There is a problem</h2>\n'
        + (f"<p>{_e(form_error)}</p>\n" if form_error else "")
        + (f"<ul>\n{items}</ul>\n" if items else "")
        + "</div>\n"
    )


def _input(field: FieldView, ident: str) -> str:
    affixes = [f"{ident}-{part}" for part in ("prefix", "suffix") if getattr(field, part)]
    described = " ".join(
        ([f"{ident}-help"] if field.help else []) + ([f"{ident}-error"] if field.error else []) + affixes
    )
    attrs = [
        f'type="{"password" if field.secret else "text"}" id="{ident}" name="{ident}"',
        f'autocomplete="{"new-password" if field.secret else "off"}" spellcheck="false" autocapitalize="off"',
    ]
    attrs += [f'aria-describedby="{described}"'] if described else []
    attrs += ["required"] if field.required else []
    attrs += ['aria-invalid="true"'] if field.error else []
    attrs += [f'placeholder="{_e(field.placeholder)}"'] if field.placeholder else []
    attrs += [f'value="{_e(field.value)}"'] if field.value and not field.secret else []  # never echo a secret
    tag = f"<input {' '.join(attrs)}>"
    if not (field.prefix or field.suffix):
        return tag + "\n"
    prefix = f'<span class="affix" id="{ident}-prefix">{_e(field.prefix)}</span>' if field.prefix else ""
    suffix = f'<span class="affix" id="{ident}-suffix">{_e(field.suffix)}</span>' if field.suffix else ""
    return f'<div class="affixed">{prefix}{tag}{suffix}</div>\n'


def _field(field: FieldView) -> str:
    ident = _e(input_name(field.name))
    hint = "required" if field.required else "optional"
    help_text = f'<p class="help" id="{ident}-help">{_e(field.help)}</p>\n' if field.help else ""
    error = (
        f'<p class="field-error" id="{ident}-error"><span class="visually-hidden">Error: </span>{_e(field.error)}</p>\n'
        if field.error
        else ""
    )
    return (
        '<div class="field">\n'
        f'<label for="{ident}">{_e(field.label)} <span class="hint">({hint})</span></label>\n'
        f"{help_text}{error}{_input(field, ident)}</div>\n"
    )


def form_page(
    *,
    link_id: str,
    token: str,
    link_title: str,
    partner_name: str,
    description: str,
    fields: list[FieldView],
    form_error: str | None = None,
    notice: str | None = None,
    oauth: bool = False,
    environment_label: str | None = None,
    scopes: tuple[str, ...] | list[str] = (),
) -> str:
    """The connect form. With `oauth`, secret fields are dropped and the form starts the OAuth flow.
    `environment_label` (a link for another environment than production, e.g. "Sandbox") is said plainly at the
    top; `scopes` lists the access the link asks for."""
    fields = [f for f in fields if not (oauth and f.secret)]
    has_errors = bool(form_error) or any(f.error for f in fields)
    partner = _e(partner_name)
    action = "/connect/oauth/start" if oauth else "/connect"
    redirect = f"<p>You will be sent to {partner} to approve access, then brought back here.</p>\n" if oauth else ""
    body = (
        _environment_badge(environment_label)
        + f"<h1>Connect {partner}</h1>\n"
        + f'<p class="lead">{_e(link_title)}</p>\n'
        + _environment_notice(environment_label, partner)
        + f"<p>{_e(description)}</p>\n"
        + _scopes(scopes)
        + '<p class="small">What you enter is sent encrypted and stored encrypted. This link works once.</p>\n'
        + (f'<div class="notice" role="status"><p>{_e(notice)}</p></div>\n' if notice else "")
        + f'<form method="post" action="{action}" novalidate>\n'
        + (_error_summary(fields, form_error) if has_errors else "")
        + f'<input type="hidden" name="id" value="{_e(link_id)}">\n'
        f'<input type="hidden" name="token" value="{_e(token)}">\n'
        + "".join(_field(f) for f in fields)
        + f'{redirect}<button type="submit">Connect {partner}</button>\n</form>\n'
    )
    title = f"Connect {partner_name} – {link_title}"
    return _document(f"Error: {title}" if has_errors else title, body)


def _environment_badge(label: str | None) -> str:
    return f'<p class="badge">{_e(label)}</p>\n' if label else ""


def _environment_notice(label: str | None, partner: str) -> str:
    if not label:
        return ""
    return (
        '<div class="notice" role="note">'
        f"<p>You are connecting a <strong>{_e(label)}</strong> account of {partner}, not your live account.</p></div>\n"
    )


def _scopes(scopes: tuple[str, ...] | list[str]) -> str:
    if not scopes:
        return ""
    items = "".join(f"<li><code>{_e(scope)}</code></li>\n" for scope in scopes)
    heading = '<h2 id="scopes-title">Access asked for</h2>\n'
    return f'{heading}<ul class="scopes" aria-labelledby="scopes-title">\n{items}</ul>\n'


def gone_page() -> str:
    """The one page for unknown, used, revoked and expired links (T3: they look the same from outside)."""
    return _document(
        _GONE_HEADING,
        f"<h1>{_GONE_HEADING}</h1>\n<p>Ask whoever sent you this link for a new one.</p>\n",
    )


def locked_page() -> str:
    """The page for a link whose token failed too many connection tests: only its sender can issue a new one."""
    return _document(
        _LOCKED_HEADING,
        f"<h1>{_LOCKED_HEADING}</h1>\n"
        "<p>Too many attempts to connect with this link failed, so it no longer accepts any.</p>\n"
        "<p>Nothing was saved. Ask whoever sent you this link for a new one.</p>\n",
    )


def success_page(*, partner_name: str, link_title: str = "", account_name: str | None = None) -> str:
    """The page shown once the credential is stored (the link title is left out when not known)."""
    account = f" as <strong>{_e(account_name)}</strong>" if account_name else ""
    lead = f'<p class="lead">{_e(link_title)}</p>\n' if link_title else ""
    body = (
        "<h1>Connected</h1>\n"
        f"{lead}"
        f"<p>{_e(partner_name)} is now connected{account}.</p>\n"
        "<p>You can close this window.</p>\n"
    )
    return _document(f"Connected – {link_title}" if link_title else "Connected", body)


def message_page(*, heading: str, message: str) -> str:
    """A plain page with a heading and one message, e.g. a 400 or 503 "try again"."""
    return _document(heading, f"<h1>{_e(heading)}</h1>\n<p>{_e(message)}</p>\n")


def is_origin(text: str) -> bool:
    """Whether `text` is a `scheme://host[:port]` that `security_headers` accepts as a form-action origin."""
    return _ORIGIN.fullmatch(text) is not None


def security_headers(*, form_action_origins: tuple[str, ...] = ()) -> dict[str, str]:
    """Headers for every page. `form_action_origins` (scheme://host[:port]) are where a form may end up,
    e.g. the provider's authorization server that /connect/oauth/start redirects to."""
    for origin in form_action_origins:
        if not is_origin(origin):
            raise ValueError(f"not an origin: {origin!r}")
    form_action = " ".join(("'self'", *form_action_origins))
    csp = (
        f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
