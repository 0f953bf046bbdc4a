"""Cases shared by the unit and lab tests of the ingress."""

# The API reference's table (concepts/services-networking/ingress, "Examples"): rules, request, match
API_TABLE = [
    ([("Prefix", "/")], "/anything/at/all", "/"),
    ([("Exact", "/foo")], "/foo", "/foo"),
    ([("Exact", "/foo")], "/bar", None),
    ([("Exact", "/foo")], "/foo/", None),
    ([("Exact", "/foo/")], "/foo", None),
    ([("Prefix", "/foo")], "/foo", "/foo"),
    ([("Prefix", "/foo")], "/foo/", "/foo"),
    ([("Prefix", "/foo/")], "/foo", "/foo/"),
    ([("Prefix", "/foo/")], "/foo/", "/foo/"),
    ([("Prefix", "/aaa/bb")], "/aaa/bbb", None),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb", "/aaa/bbb"),
    ([("Prefix", "/aaa/bbb/")], "/aaa/bbb", "/aaa/bbb/"),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/", "/aaa/bbb"),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/ccc", "/aaa/bbb"),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
    ([("Prefix", "/"), ("Prefix", "/aaa")], "/aaa/ccc", "/aaa"),
    ([("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/aaa/bbb", "/aaa/bbb"),
    ([("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/ccc", "/"),
    ([("Prefix", "/aaa")], "/ccc", None),
    ([("Prefix", "/foo"), ("Exact", "/foo")], "/foo", "Exact /foo"),
    ([("Exact", "/foo"), ("Prefix", "/foo")], "/foo", "Exact /foo"),
    # beyond the table: longest wins whatever the order; ImplementationSpecific is Prefix
    ([("Prefix", "/a"), ("Prefix", "/a/b/c"), ("Prefix", "/a/b")], "/a/b/x", "/a/b"),
    ([("ImplementationSpecific", "/foo")], "/foo/bar", "/foo"),
    ([("ImplementationSpecific", "/foo")], "/foobar", None),
    ([("Exact", "/foo")], "/foo?x=1".split("?")[0], "/foo"),
]
