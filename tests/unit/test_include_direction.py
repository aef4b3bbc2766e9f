"""Which way includes point (DESIGN section 9), checked on the tree.

- Only two files include gRPC core's headers (<grpc/...>): the server
  transport (server/rpc/grpc_server.c) and the client runtime
  (client/src/client_rpc.c), which the remote bridge uses.
- A folder's internal header (*_internal.h) is included only within its
  module (server/store/local's anywhere under server/store; common/json's
  only under common/json), and by that module's own unit tests and fuzz
  targets.
- restbridge/ reaches the server only through the call runtime (server/rpc)
  and auth (server/auth), never other server internals.

Usage: test_include_direction.py SOURCE_DIR. Exit status 1 lists every breach.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_store_layering as layering  # noqa: E402 (its tree walk)

GRPC_FILES = {"server/rpc/grpc_server.c", "client/src/client_rpc.c"}
# Module tests that exercise a folder's internals on purpose.
INTERNAL_TESTS = {
    "restbridge_internal.h": {"tests/fuzz/fuzz_rest_request.c"},
    "analytics_internal.h": {"tests/unit/test_client.c"},
    "json_internal.h": {"tests/unit/test_json.c", "tests/unit/json_roundtrip.c"},
    "notify_internal.h": {"tests/unit/test_notify.c"},
}
# Server folders restbridge/ may include from.
BRIDGE_MAY_USE = ("server/rpc/", "server/auth/")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
TOPS = ("server", "common", "restbridge", "client", "gen", "bench", "tests")


def module_of(folder):
    """The module a folder belongs to: its first two path components
    (server/store for server/store/local, common/json, restbridge)."""
    return "/".join(folder.split("/")[:2])


def sources(root):
    for top in TOPS:
        yield from layering.sources(root, top)


def report(breaches):
    """Prints the breaches; the exit status."""
    for b in breaches:
        print(b)
    if breaches:
        print("%d include-direction breaches (DESIGN section 9)" % len(breaches))
        return 1
    print("includes point the right way")
    return 0


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    headers = {}  # base name -> folders holding it
    for rel, _ in sources(root):
        if rel.endswith(".h"):
            headers.setdefault(os.path.basename(rel), set()).add(os.path.dirname(rel))
    breaches = []
    for rel, path in sources(root):
        folder = os.path.dirname(rel)
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                name = m.group(2)
                base = os.path.basename(name)
                if m.group(1) == "<" and name.startswith("grpc/") and rel not in GRPC_FILES:
                    breaches.append("%s:%d: includes gRPC core's <%s>" % (rel, n, name))
                    continue
                if m.group(1) != '"':
                    continue
                homes = headers.get(base, set())
                own = any(folder == module_of(h) or folder.startswith(module_of(h) + "/")
                          for h in homes)
                if base.endswith("_internal.h") and homes and not own and \
                        rel not in INTERNAL_TESTS.get(base, ()):
                    breaches.append("%s:%d: includes %s, internal to %s"
                                    % (rel, n, name, ", ".join(sorted(homes))))
                if rel.startswith("restbridge/"):
                    bad = [h for h in homes if h.startswith("server/")
                           and not (h + "/").startswith(BRIDGE_MAY_USE)]
                    if bad and not any(h.startswith(("common", "restbridge")) for h in homes):
                        breaches.append("%s:%d: includes %s from %s (the bridge uses the call "
                                        "runtime and auth only)" % (rel, n, name, bad[0]))
    return report(breaches)


if __name__ == "__main__":
    sys.exit(main())
