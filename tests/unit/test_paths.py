"""prefork_wasm.paths: the one normalised path that routing, access control and the guest see."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_wasm.paths import ENCODED_SLASHES, PathRefused, request_path

# (request-target, the path every decision uses, or the status it is refused with) under
# AllowEncodedSlashes Off, the default. Each hostile shape either becomes the path it means or
# is refused; none reaches a guest as something a Location did not see.
HOSTILE: list[tuple[str, str | int]] = [
    # The three bypasses of an '<Location /admin>' rule found in review.
    ("/%61dmin/x", "/admin/x"),
    ("/x/../admin/x", "/admin/x"),
    ("//admin/x", "/admin/x"),
    # Dot segments, plain and encoded in every mix (unreserved characters are decoded first).
    ("/./admin", "/admin"),
    ("/x/./../admin", "/admin"),
    ("/x/%2e%2e/admin", "/admin"),
    ("/x/.%2e/admin", "/admin"),
    ("/x/%2E./admin", "/admin"),
    ("/x/%2e/admin", "/x/admin"),
    ("/admin/x/..", "/admin/"),
    ("/admin/.", "/admin/"),
    ("/x/y/../../admin", "/admin"),
    ("/...", "/..."),  # three dots is a name
    ("/a..b/x", "/a..b/x"),
    ("/%2e", "/"),
    # Merged slashes, also after a dot segment.
    ("///admin//x///", "/admin/x/"),
    ("/x/..//admin", "/admin"),
    ("///", "/"),
    # Climbing above '/' is refused, not clamped.
    ("/../admin/x", 400),
    ("/..", 400),
    ("/x/../../admin", 400),
    ("/%2e%2e/admin", 400),
    ("/.%2E/admin", 400),
    ("//../admin", 400),
    # Malformed escapes.
    ("/%zz", 400),
    ("/%2", 400),
    ("/a%", 400),
    ("/%%32%65", 400),
    ("/%g0", 400),
    # Encoded slash and NUL (AllowEncodedSlashes Off).
    ("/admin%2Fx", 404),
    ("/admin%2fx", 404),
    ("/x%2F..%2Fadmin", 404),
    ("/x/%2e%2e%2fadmin", 404),
    ("/a%00b", 404),
    # Decoded once only: '%25' gives a literal '%', never a second round of decoding.
    ("/%252e%252e/admin", "/%2e%2e/admin"),
    ("/%2561dmin", "/%61dmin"),
    # Bytes are decoded as bytes, and must then be UTF-8: overlong forms are not '.' or '/'.
    ("/%C3%A9t%C3%A9", "/\u00e9t\u00e9"),
    ("/%C0%AE%C0%AE/admin", 400),
    ("/%C0%AF", 400),
    ("/%E0%80%AE", 400),
    ("/%ED%A0%80", 400),  # an encoded UTF-16 surrogate
    ("/%ff", 400),
    # A backslash is an ordinary character (POSIX, WASI, Apache on Unix), never a separator.
    ("/x\\..\\admin", "/x\\..\\admin"),
    ("/x%5C..%5Cadmin", "/x\\..\\admin"),
    # Other reserved characters are decoded into the segment they are in.
    ("/admin%3Fx", "/admin?x"),
    ("/admin;x/y", "/admin;x/y"),
    ("/a%20b", "/a b"),
    ("/x%0D%0Ay", "/x\r\ny"),
    # The query is no part of the path, whatever it holds.
    ("/x?y=/../admin", "/x"),
    ("/x/..?a", "/"),
    # Absolute-form (RFC 9112 3.2.2) is normalised the same way; asterisk-form stays '*'.
    ("http://h/%61dmin/x", "/admin/x"),
    ("HTTPS://h:8080//admin", "/admin"),
    ("http://h", "/"),
    ("http://h?x", "/"),
    ("http://h/../admin", 400),
    ("ftp://h/x", 400),
    ("*", "*"),
    # What h11 already refuses on the wire is refused here too.
    ("/admin#x", 400),
    ("/a b", 400),
    ("/a\x00b", 400),
    ("/a\tb", 400),
    ("/\u00e9", 400),
    ("admin", 400),
    ("", 400),
]


@pytest.mark.parametrize(("target", "expected"), HOSTILE)
def test_hostile_paths(target: str, expected: str | int) -> None:
    if isinstance(expected, int):
        with pytest.raises(PathRefused) as refused:
            request_path(target)
        assert refused.value.status == expected
    else:
        assert request_path(target) == expected


def test_the_table_is_large() -> None:
    assert len(HOSTILE) >= 25


@pytest.mark.parametrize(
    ("target", "off", "on", "nodecode"),
    [
        ("/a%2Fb", 404, "/a/b", "/a%2Fb"),
        ("/a%2fb", 404, "/a/b", "/a%2fb"),
        ("/x/y%2F..%2F..%2Fadmin", 404, "/admin", "/x/y%2F..%2F..%2Fadmin"),
        ("/x%2F..%2F..%2Fadmin", 404, 400, "/x%2F..%2F..%2Fadmin"),  # On: climbs once decoded
        ("/a%2F%2Fb", 404, "/a/b", "/a%2F%2Fb"),
        ("/a%00%2Fb", 404, 404, 404),  # an encoded NUL is 404 whatever the setting
        ("/%61%2F%62", 404, "/a/b", "/a%2Fb"),
        ("/a%252Fb", "/a%2Fb", "/a%2Fb", "/a%2Fb"),
    ],
)
def test_allow_encoded_slashes(target: str, off: str | int, on: str | int, nodecode: str | int) -> None:
    for setting, expected in zip(ENCODED_SLASHES, (off, on, nodecode), strict=True):
        if isinstance(expected, int):
            with pytest.raises(PathRefused) as refused:
                request_path(target, setting)
            assert refused.value.status == expected, setting
        else:
            assert request_path(target, setting) == expected, setting


_PATH_CHARS = st.sampled_from(["/", ".", "%2e", "%2E", "%2f", "%25", "%61", "a", "b", "%", "..", "//", "%00", "\\"])


@given(st.lists(_PATH_CHARS, max_size=12))
def test_normalised_paths_are_fixed_points(pieces: list[str]) -> None:
    """Whatever comes in, what comes out is absolute, has no dot segment or empty segment, and
    normalising it again (its '%' re-encoded) changes nothing: there is one form."""
    try:
        path = request_path("/" + "".join(pieces), "on")
    except PathRefused as e:
        assert e.status in (400, 404)
        return
    assert path.startswith("/")
    segments = path.split("/")[1:]
    assert "." not in segments and ".." not in segments
    assert "" not in segments[:-1]
    assert request_path(path.replace("%", "%25"), "on") == path
