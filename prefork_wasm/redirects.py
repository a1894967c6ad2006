"""mod_alias's redirects (`Redirect`, `RedirectMatch`, `RedirectPermanent`, `RedirectTemp`) and
core's `ErrorDocument`: parsed once from their lines, looked up per request. Pure.

A Redirect matches a URL-path prefix on whole segments and carries the rest of the path over
to its target; a RedirectMatch matches a regular expression and fills $0-$9 into its target.
The request's query string follows when the target has none (mod_alias). Redirects given at
server level are looked at before the client's access is checked (Apache's translate-name
phase), those of a <Location> after it (its fixups phase).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

STATUS_WORDS = {"permanent": 301, "temp": 302, "seeother": 303, "gone": 410}
# What a redirect's target URL must look like: a scheme and host, or a path on this server.
_ABSOLUTE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/]+.*|/.*")


@dataclass(frozen=True)
class RedirectRule:
    status: int
    target: str  # '' for a status outside 3xx (gone)
    prefix: str = ""  # Redirect: the URL-path (in a <Location>, '': the whole Location)
    pattern: re.Pattern[str] | None = None  # RedirectMatch
    in_location: bool = False  # given in a <Location>: looked at after the access check
    source: str = ""

    def match(self, path: str) -> str | None:
        """The target for `path` (normalised, decoded), or None when the rule does not match."""
        if self.pattern is not None:
            found = self.pattern.search(path)
            if found is None:
                return None
            groups = [found[0] or "", *(g or "" for g in found.groups())]
            return re.sub(r"\$(\d)", lambda m: groups[int(m[1])] if int(m[1]) < len(groups) else "", self.target)
        if not self.prefix:
            return self.target
        prefix = self.prefix
        if not (path.startswith(prefix) if prefix.endswith("/") else path == prefix or path.startswith(prefix + "/")):
            return None
        if not self.target:  # gone, or another status without a URL
            return ""
        # The rest of the path, after the prefix as written (Apache's alias_matches): a target
        # written without the prefix's trailing slash gets none either.
        return self.target + quote(path[len(prefix):], safe="/!$&'()*+,;=:@~")


def parse_redirect(directive: str, args: list[str], in_location: bool, source: str = "") -> RedirectRule:
    """Redirect [status] URL-path URL (in a <Location>: [status] URL), RedirectMatch [status]
    regex URL, RedirectPermanent and RedirectTemp URL-path URL. A 3xx status takes a URL, any
    other none (Redirect gone /old)."""
    words = list(args)
    status = 302
    name = directive.lower()
    if name == "redirectpermanent":
        status = 301
    elif name == "redirecttemp":
        status = 302
    elif words and (words[0].lower() in STATUS_WORDS or words[0].isdigit()):
        word = words.pop(0).lower()
        status = STATUS_WORDS.get(word) or int(word)
        if not 300 <= status <= 599:
            raise ValueError(f"status {status} is not a redirect or error status (300-599)")
    wants_url = 300 <= status <= 399
    takes_path = not (in_location and name in ("redirect", "redirectpermanent", "redirecttemp"))
    expected = (1 if takes_path else 0) + (1 if wants_url else 0)
    if len(words) != expected:
        what = ("URL-path " if takes_path and name != "redirectmatch" else "regex " if takes_path else "") + (
            "URL" if wants_url else ""
        )
        extra = "" if wants_url else f" (a {status} has no URL)"
        raise ValueError(f"expected {what.strip() or 'nothing more'}{extra}, got {' '.join(words) or 'nothing'}")
    target = words[-1] if wants_url else ""
    if wants_url and not _ABSOLUTE.fullmatch(target):
        raise ValueError(f"the target {target!r} must be a URL (scheme://host/...) or a path starting with '/'")
    if name == "redirectmatch":
        try:
            pattern = re.compile(words[0])
        except re.error as e:
            raise ValueError(f"invalid regular expression {words[0]!r}: {e}") from None
        return RedirectRule(status, target, pattern=pattern, in_location=in_location, source=source)
    prefix = words[0] if takes_path else ""
    if takes_path and not prefix.startswith("/"):
        raise ValueError(f"the URL-path must start with '/', got {prefix!r}")
    return RedirectRule(status, target, prefix=prefix, in_location=in_location, source=source)


def find(rules: list[RedirectRule], path: str, query: str, in_location: bool) -> tuple[RedirectRule, str] | None:
    """The first rule of the phase (`in_location`) that matches, and its target with the query
    string carried over; None when none matches."""
    for rule in rules:
        if rule.in_location != in_location:
            continue
        target = rule.match(path)
        if target is not None:
            if query and "?" not in target and target:
                target += f"?{query}"
            return rule, target
    return None


def parse_error_document(args: list[str]) -> tuple[int, str | None]:
    """ErrorDocument CODE DOCUMENT: a local URL-path ('/errors/404.html'), a URL
    ('https://...') or a text; 'default' restores the server's own page (None)."""
    code_text, document = args
    if not code_text.isdigit() or not 400 <= int(code_text) <= 599:
        raise ValueError(f"expected an error status 400-599, got {code_text!r}")
    if document == "default":
        return int(code_text), None
    return int(code_text), document


def error_document_kind(document: str) -> str:
    """'local' (a URL-path, served internally), 'remote' (a URL: a 302 to it) or 'text'."""
    if document.startswith("/"):
        return "local"
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", document):
        return "remote"
    return "text"
