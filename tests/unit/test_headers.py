"""mod_headers' Header and RequestHeader actions, each row citing Apache 2.4's documentation of
mod_headers; and mod_alias's redirects and core's ErrorDocument as parsed and matched."""

from __future__ import annotations

import pytest

from prefork_wasm.headers import Exchange, apply, expand, parse
from prefork_wasm.redirects import error_document_kind, find, parse_error_document, parse_redirect

EXCHANGE = Exchange(start=1_796_000_000.5, env={"TENANT": "acme"})
FIELDS = [(b"Content-Type", b"text/html"), (b"Cache-Control", b"no-cache"), (b"Set-Cookie", b"a=1")]


def header(line: str, fields: list[tuple[bytes, bytes]] = FIELDS, request: list[tuple[bytes, bytes]] | None = None
           ) -> list[tuple[bytes, bytes]]:
    words = line.split()
    return apply([parse(words[0], words[1:])], fields, EXCHANGE, request)


@pytest.mark.parametrize(
    "line, expected, apache_says",
    [
        ("Header set X-Frame-Options DENY", [*FIELDS, (b"X-Frame-Options", b"DENY")],
         "set: the response header is set, replacing any previous header with this name"),
        ("Header set cache-control max-age=60", [FIELDS[0], (b"cache-control", b"max-age=60"), FIELDS[2]],
         "set replaces the header of that name (names compare case-insensitively)"),
        ("Header append Cache-Control private", [FIELDS[0], (b"Cache-Control", b"no-cache, private"), FIELDS[2]],
         "append: the value is appended to any existing header of the same name, separated by a comma"),
        ("Header append X-New 1", [*FIELDS, (b"X-New", b"1")], "append: when a new value is merged onto a "
         "non-existent header, it is set"),
        ("Header merge Cache-Control no-cache", FIELDS,
         "merge: like append, except that if the value already appears, it is not appended again"),
        ("Header merge Cache-Control no-store", [FIELDS[0], (b"Cache-Control", b"no-cache, no-store"), FIELDS[2]],
         "merge: a new value is appended"),
        ("Header add Set-Cookie b=2", [*FIELDS, (b"Set-Cookie", b"b=2")],
         "add: added to the existing set of headers even if this header already exists (multiple headers)"),
        ("Header setifempty Content-Type text/plain", FIELDS,
         "setifempty: the header is set only if there is no previous header with this name"),
        ("Header setifempty X-Empty yes", [*FIELDS, (b"X-Empty", b"yes")], "setifempty: ... else it is set"),
        ("Header unset Set-Cookie", FIELDS[:2], "unset: the response header of this name is removed, if it exists"),
        ("Header edit Set-Cookie ^(a)=1$ $1=9", [*FIELDS[:2], (b"Set-Cookie", b"a=9")],
         "edit: a regular expression search-and-replace, the replacement may contain backreferences"),
        ("Header edit Cache-Control c no-c", [FIELDS[0], (b"Cache-Control", b"no-no-cache"), FIELDS[2]],
         "edit replaces the first match only (here the 'c' of no-)"),
        ("Header edit* Cache-Control c C", [FIELDS[0], (b"Cache-Control", b"no-CaChe"), FIELDS[2]],
         "edit*: every match"),
        ("Header always set X-Always 1", [*FIELDS, (b"X-Always", b"1")], "always: the same actions, another table"),
        ("Header set X-Tenant %{TENANT}e", [*FIELDS, (b"X-Tenant", b"acme")],
         "%{VARNAME}e: the contents of the environment variable VARNAME"),
        ("Header set X-Pct 100%%", [*FIELDS, (b"X-Pct", b"100%")], "%%: the percent sign"),
        ("Header set X-Time %t", [*FIELDS, (b"X-Time", b"t=1796000000500000")],
         "%t: the time the request was received, in microseconds since the epoch, as t=..."),
        ("Header set X-Cond 1 env=TENANT", [*FIELDS, (b"X-Cond", b"1")],
         "env=VAR: the directive is applied if the environment variable VAR exists"),
        ("Header set X-Cond 1 env=!TENANT", FIELDS, "env=!VAR: applied only if VAR does not exist"),
        ("Header note X-Note x", FIELDS, "note: copies a header to a note (notes are not kept here)"),
    ],
)
def test_header_actions(line: str, expected: list[tuple[bytes, bytes]], apache_says: str) -> None:
    assert header(line) == expected, apache_says


def test_header_echo_copies_the_request_headers_whose_name_matches() -> None:
    """echo: request headers with this name (a regular expression) are echoed back."""
    request = [(b"x-trace-id", b"abc"), (b"x-other", b"z"), (b"accept", b"*/*")]
    assert header("Header echo ^X-Trace", [], request) == [(b"x-trace-id", b"abc")]


def test_request_header_actions_are_the_header_ones_without_echo_and_always() -> None:
    fields = [(b"host", b"x"), (b"accept", b"*/*")]
    assert header("RequestHeader set X-Forwarded-Proto https", fields)[-1] == (b"X-Forwarded-Proto", b"https")
    assert header("RequestHeader unset Accept", fields) == [(b"host", b"x")]
    for line in ("RequestHeader echo X", "RequestHeader always set X 1"):
        with pytest.raises(ValueError, match="unknown action"):
            header(line)


@pytest.mark.parametrize(
    "args, message",
    [
        (["bogus", "X", "1"], "unknown action 'bogus'"),
        (["set", "Bad Name", "1"], "is not a header field name"),
        (["set", "X"], "set takes a value"),
        (["edit", "X", "a"], "a regular expression and a replacement"),
        (["edit", "X", "(", "b"], "invalid regular expression"),
        (["set", "X", "1", "expr=%{REQUEST_URI} =~ /x/"], "expr= conditions are not supported"),
        (["set", "X", "%z"], "unknown %-specifier"),
        (["set", "X", "1", "early", "env=A"], "unexpected"),
    ],
)
def test_a_header_line_apache_or_this_server_refuses_says_why(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse("Header", args)


def test_percent_d_is_the_time_taken_so_far() -> None:
    assert expand("%D", Exchange(start=0.0, env={})).startswith("D=")


# --- mod_alias --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "directive, args, path, query, expected, apache_says",
    [
        ("Redirect", ["/service", "http://foo2.example.com/service"], "/service/foo.txt", "",
         (302, "http://foo2.example.com/service/foo.txt"),
         "a request for /service/foo.txt is told to access http://foo2.example.com/service/foo.txt"),
        ("Redirect", ["/service", "http://foo2.example.com/service"], "/services", "", None,
         "only complete path segments are matched"),
        ("Redirect", ["/one", "/two"], "/one", "a=1", (302, "/two?a=1"),
         "a URL-path target; the query string is carried over"),
        ("Redirect", ["permanent", "/one", "http://x.test/two"], "/one", "", (301, "http://x.test/two"),
         "permanent: a permanent redirect status (301)"),
        ("Redirect", ["seeother", "/one", "http://x.test/two"], "/one", "", (303, "http://x.test/two"),
         "seeother: 303, the resource has been replaced"),
        ("Redirect", ["307", "/one", "http://x.test/two"], "/one", "", (307, "http://x.test/two"),
         "other status codes can be returned by giving the numeric status code"),
        ("Redirect", ["gone", "/old"], "/old/x", "", (410, ""), "gone: 410, the URL-path argument only"),
        ("RedirectPermanent", ["/a", "http://x.test/b"], "/a/c", "", (301, "http://x.test/b/c"),
         "RedirectPermanent is equivalent to Redirect permanent"),
        ("RedirectTemp", ["/a", "http://x.test/b"], "/a", "", (302, "http://x.test/b"),
         "RedirectTemp is equivalent to Redirect temp"),
        ("RedirectMatch", [r"(.*)\.gif$", "http://other.example.com$1.jpg"], "/img/a.gif", "",
         (302, "http://other.example.com/img/a.jpg"), "RedirectMatch: a regular expression with $1 substitutions"),
    ],
)
def test_redirects(
    directive: str, args: list[str], path: str, query: str, expected: tuple[int, str] | None, apache_says: str
) -> None:
    rule = parse_redirect(directive, args, in_location=False)
    found = find([rule], path, query, in_location=False)
    assert (None if found is None else (found[0].status, found[1])) == expected, apache_says


def test_a_redirect_in_a_location_takes_no_url_path() -> None:
    """Apache 2.4: when Redirect is used within a <Location> with the URL-path omitted, the
    Location is redirected."""
    rule = parse_redirect("Redirect", ["permanent", "http://new.test/"], in_location=True)
    assert find([rule], "/anything/below", "", in_location=True) == (rule, "http://new.test/")
    assert find([rule], "/anything", "", in_location=False) is None  # its own phase only


@pytest.mark.parametrize(
    "args, message",
    [
        (["/a"], "expected URL-path URL"),
        (["gone", "/a", "http://x"], "a 410 has no URL"),
        (["/a", "nowhere"], "must be a URL"),
        (["200", "/a", "/b"], "not a redirect or error status"),
        (["a", "http://x.test/"], "the URL-path must start with '/'"),
    ],
)
def test_a_bad_redirect_says_why(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redirect("Redirect", args, in_location=False)


@pytest.mark.parametrize(
    "document, kind, apache_says",
    [
        ("/cgi-bin/missing.pl", "local", "a local URL-path, served by an internal redirect"),
        ("http://www.example.com/subscription_info.html", "remote", "an external URL: the client is redirected"),
        ('"Sorry can\'t allow you access today"', "text", "a custom error message"),
        ("Sorry, our script crashed", "text", "a message: anything with a space"),
    ],
)
def test_error_document_kinds(document: str, kind: str, apache_says: str) -> None:
    assert error_document_kind(document) == kind, apache_says


def test_error_document_default_restores_the_server_s_own_page() -> None:
    """'ErrorDocument 404 default' restores Apache's own message, undoing an inherited one."""
    assert parse_error_document(["404", "default"]) == (404, None)
    with pytest.raises(ValueError, match="400-599"):
        parse_error_document(["302", "/x"])
