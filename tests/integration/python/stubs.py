"""Python stubs for the analytics contracts, generated at test time.

`load()` runs Debian's protoc with grpc_python_plugin once per process into a
temporary directory, makes that directory importable and returns the
generated modules. The google.protobuf well-known types are not generated:
they come with python3-protobuf.

Import layout:
  * `analytics.v1.*`, `google.api.*`, `google.rpc.*` are found through
    sys.path. `google` is installed as a namespace package (no __init__.py),
    so the generated `google/api` and `google/rpc` directories join it;
    nothing here creates a `google/__init__.py`.
  * `grpc.health.v1.*` and `grpc.reflection.*` live under the installed
    `grpc` package, which is a regular package: the generated `grpc`
    directory is appended to `grpc.__path__` so that `grpc.health` and
    `grpc.reflection` resolve to it (the installed grpcio ships neither).
"""

import atexit
import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types

import grpc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_DIR = os.path.join(REPO, "proto")

PROTOC = os.environ.get("PROTOC", "/usr/bin/protoc")
GRPC_PYTHON_PLUGIN = os.environ.get("GRPC_PYTHON_PLUGIN", "/usr/bin/grpc_python_plugin")

INCLUDE_DIRS = [
    PROTO_DIR,
    "/usr/share/gocode/src/github.com/gogo/googleapis",
    "/usr/share/grpc-proto",
    "/usr/include",
]

EXTRA_PROTOS = [
    "google/api/annotations.proto",
    "google/api/http.proto",
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
]

# Package of the service contracts; every service in it is enumerated.
ANALYTICS_PACKAGE = "analytics.v1"

_loaded = None


class StubError(RuntimeError):
    pass


def _analytics_protos():
    files = sorted(glob.glob(os.path.join(PROTO_DIR, "analytics", "v1", "*.proto")))
    if not files:
        raise StubError("no .proto files under %s/analytics/v1" % PROTO_DIR)
    return [os.path.relpath(f, PROTO_DIR) for f in files]


def generate(out_dir):
    """Runs protoc into out_dir; raises StubError with protoc's output on failure."""
    for tool in (PROTOC, GRPC_PYTHON_PLUGIN):
        if not os.access(tool, os.X_OK):
            raise StubError("%s is missing (apt-get install protobuf-compiler "
                            "protobuf-compiler-grpc)" % tool)
    cmd = [PROTOC]
    cmd += ["-I" + d for d in INCLUDE_DIRS]
    cmd += [
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        "--plugin=protoc-gen-grpc_python=" + GRPC_PYTHON_PLUGIN,
    ]
    cmd += _analytics_protos() + EXTRA_PROTOS
    res = subprocess.run(cmd, cwd=PROTO_DIR, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
    if res.returncode != 0:
        raise StubError("protoc failed (%d):\n%s\ncommand: %s"
                        % (res.returncode, res.stdout, " ".join(cmd)))


def _make_importable(out_dir):
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    grpc_dir = os.path.join(out_dir, "grpc")
    if grpc_dir not in grpc.__path__:
        grpc.__path__.append(grpc_dir)
    importlib.invalidate_caches()


def _import(name, out_dir):
    mod = importlib.import_module(name)
    path = os.path.abspath(getattr(mod, "__file__", "") or "")
    if not path.startswith(os.path.abspath(out_dir) + os.sep):
        raise StubError("%s was imported from %s, not from the generated stubs in %s"
                        % (name, path, out_dir))
    return mod


def load():
    """Generates (once) and imports the stubs; returns a namespace of modules.

    Attributes:
      out_dir, health_pb2, health_pb2_grpc, reflection_v1_pb2,
      reflection_v1_pb2_grpc, reflection_v1alpha_pb2, reflection_v1alpha_pb2_grpc,
      options_pb2, status_pb2, error_details_pb2, annotations_pb2,
      analytics: {"events": (pb2, pb2_grpc), ...}
    """
    global _loaded
    if _loaded is not None:
        return _loaded

    out_dir = tempfile.mkdtemp(prefix="ana-stubs-")
    if not os.environ.get("ANA_TEST_KEEP"):
        atexit.register(shutil.rmtree, out_dir, True)
    generate(out_dir)
    _make_importable(out_dir)

    ns = types.SimpleNamespace(out_dir=out_dir)
    ns.health_pb2 = _import("grpc.health.v1.health_pb2", out_dir)
    ns.health_pb2_grpc = _import("grpc.health.v1.health_pb2_grpc", out_dir)
    ns.reflection_v1_pb2 = _import("grpc.reflection.v1.reflection_pb2", out_dir)
    ns.reflection_v1_pb2_grpc = _import("grpc.reflection.v1.reflection_pb2_grpc", out_dir)
    ns.reflection_v1alpha_pb2 = _import("grpc.reflection.v1alpha.reflection_pb2", out_dir)
    ns.reflection_v1alpha_pb2_grpc = _import("grpc.reflection.v1alpha.reflection_pb2_grpc",
                                             out_dir)
    ns.annotations_pb2 = _import("google.api.annotations_pb2", out_dir)
    ns.status_pb2 = _import("google.rpc.status_pb2", out_dir)
    ns.error_details_pb2 = _import("google.rpc.error_details_pb2", out_dir)
    ns.options_pb2 = _import("analytics.v1.options_pb2", out_dir)

    ns.analytics = {}
    for rel in _analytics_protos():
        base = os.path.splitext(os.path.basename(rel))[0]
        pb2 = _import("analytics.v1.%s_pb2" % base, out_dir)
        pb2_grpc = _import("analytics.v1.%s_pb2_grpc" % base, out_dir)
        ns.analytics[base] = (pb2, pb2_grpc)

    # The installed well-known types must still be the ones in use.
    import google.protobuf.descriptor_pb2  # noqa: F401
    _loaded = ns
    return ns


class Method(types.SimpleNamespace):
    """One RPC of the analytics contracts.

    service (full name), name, path ("/pkg.Service/Method"), client_streaming,
    server_streaming, feature (from the (analytics.v1.policy) option, "" if
    absent), descriptor (MethodDescriptor).
    """

    @property
    def kind(self):
        return {(False, False): "unary", (False, True): "server-streaming",
                (True, False): "client-streaming", (True, True): "bidi"}[
                    (self.client_streaming, self.server_streaming)]


def analytics_services():
    """Every ServiceDescriptor of the analytics package, sorted by full name."""
    ns = load()
    services = []
    for pb2, _ in ns.analytics.values():
        for svc in pb2.DESCRIPTOR.services_by_name.values():
            if svc.full_name.startswith(ANALYTICS_PACKAGE + "."):
                services.append(svc)
    return sorted(services, key=lambda s: s.full_name)


def analytics_methods():
    """Every RPC of the analytics package, as Method objects."""
    ns = load()
    methods = []
    for svc in analytics_services():
        for m in svc.methods:
            opts = m.GetOptions()
            feature = ""
            if opts.HasExtension(ns.options_pb2.policy):
                feature = opts.Extensions[ns.options_pb2.policy].feature
            methods.append(Method(
                service=svc.full_name,
                name=m.name,
                path="/%s/%s" % (svc.full_name, m.name),
                client_streaming=bool(m.client_streaming),
                server_streaming=bool(m.server_streaming),
                feature=feature,
                descriptor=m,
            ))
    return methods


if __name__ == "__main__":
    for m in analytics_methods():
        print("%-55s %-17s %s" % (m.path, m.kind, m.feature))
