#!/usr/bin/env python3
"""Checks the Kubernetes manifests in k8s/ and the Dockerfile against what analyticsd needs.

Usage: python3 tests/deploy/test_manifests.py [REPO_ROOT] [unittest options or test names]
REPO_ROOT defaults to the repository this file lives in.
"""
import glob
import os
import re
import shlex
import sys
import unittest

import yaml

# Every environment variable analyticsd reads; a ConfigMap key outside this set is a typo.
CONFIG_VARS = frozenset({
    "PORT", "GRPC_PORT", "GRPC_HOST", "MONGODB_URI", "ELASTICSEARCH_NODE",
    "CLICKHOUSE_HOST", "REDIS_URL", "RABBITMQ_URL", "REPORTS_DIR", "EXPORTS_DIR",
    "RETENTION_DAYS", "BATCH_SIZE", "PROCESSING_INTERVAL", "STREAM_BUFFER_SIZE",
    "DATA_DIR", "LOG_LEVEL", "SHUTDOWN_GRACE_MS", "DEFAULT_ACCOUNT_ID", "JWT_HS256_SECRET",
})
# What analytics-restbridge reads beyond those (restbridge/remote/main.c).
BRIDGE_VARS = frozenset({
    "RESTBRIDGE_UPSTREAM", "HTTP_MAX_BODY_BYTES", "CORS_ALLOWED_ORIGINS", "WS_SLOW_CONSUMER_MS",
    "HTTP_BODY_BUDGET_MB", "STREAM_QUEUE_BUDGET_MB", "HTTP_BODY_MIN_RATE", "HTTP_BODY_RATE_WINDOW",
    "HTTP_DECODE_THREADS", "JWT_HS256_SECRET",
})
# The Secret template (not applied by the kustomization) and the key both
# deployments take from it.
SECRET_EXAMPLE = "secret.example.yaml"
# The Prometheus operator's scrape configuration: needs the operator's CRD, so
# the kustomization leaves it out too.
SERVICE_MONITOR = "servicemonitor.yaml"
SECRET_KEY = "JWT_HS256_SECRET"
HTTP_PORT = 3004
GRPC_PORT = 50051
# Kubernetes' default when a pod spec does not set terminationGracePeriodSeconds.
DEFAULT_TERMINATION_GRACE_S = 30
KUSTOMIZATION = "kustomization.yaml"
DEBIAN_12_IMAGE = re.compile(r"^(docker\.io/)?(library/)?debian:12(\.\d+)?(-slim)?(@sha256:[0-9a-f]{64})?$")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _norm_path(path):
    return os.path.normpath(path) if path else path


def parse_dockerfile(text):
    """Returns the Dockerfile's instructions as (KEYWORD, arguments) pairs, continuations joined."""
    instructions = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    if current.strip():
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def split_stages(instructions):
    """Groups instructions by build stage: a list of {"image", "alias", "instructions"}."""
    stages = []
    for keyword, args in instructions:
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            image = words[0] if words else ""
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, args))
    return stages


class ManifestTest(unittest.TestCase):
    """Static checks of k8s/*.yaml and the Dockerfile; no cluster or Docker daemon needed."""

    @classmethod
    def setUpClass(cls):
        cls.k8s_dir = os.path.join(REPO_ROOT, "k8s")
        cls.files = sorted(glob.glob(os.path.join(cls.k8s_dir, "*.yaml")) +
                           glob.glob(os.path.join(cls.k8s_dir, "*.yml")))
        cls.docs = []  # (file name, document)
        cls.parse_errors = []
        for path in cls.files:
            try:
                with open(path, encoding="utf-8") as f:
                    for doc in yaml.safe_load_all(f):
                        if doc is not None:
                            cls.docs.append((os.path.basename(path), doc))
            except (OSError, yaml.YAMLError) as e:
                cls.parse_errors.append("%s: %s" % (os.path.basename(path), e))
        cls.dockerfile_path = os.path.join(REPO_ROOT, "Dockerfile")
        try:
            with open(cls.dockerfile_path, encoding="utf-8") as f:
                cls.dockerfile = parse_dockerfile(f.read())
        except OSError:
            cls.dockerfile = None

    # ---- helpers ----

    @staticmethod
    def component(doc):
        return ((doc.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")

    def one(self, kind, component="analyticsd"):
        """The one document of this kind for analyticsd (component "analyticsd",
        or unlabelled), or for the remote bridge (component "restbridge")."""
        found = [d for _, d in self.docs if isinstance(d, dict) and d.get("kind") == kind and
                 (self.component(d) == component or
                  (component == "analyticsd" and self.component(d) is None))]
        self.assertEqual(len(found), 1, "expected exactly one %s (%s) in k8s/, found %d"
                         % (kind, component, len(found)))
        return found[0]

    def bridge_container(self):
        spec = ((self.one("Deployment", "restbridge").get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = spec.get("containers") or []
        self.assertEqual(len(containers), 1, "the restbridge pod should run one container")
        return containers[0]

    def configmap_data(self):
        return self.one("ConfigMap").get("data") or {}

    def pod_spec(self):
        return (((self.one("Deployment").get("spec") or {}).get("template") or {}).get("spec")) or {}

    def container(self):
        containers = self.pod_spec().get("containers") or []
        self.assertTrue(containers, "the Deployment's pod template has no containers")
        for c in containers:
            if c.get("name") == "analyticsd":
                return c
        return containers[0]

    def container_port(self, name):
        for p in self.container().get("ports") or []:
            if p.get("name") == name:
                return p.get("containerPort")
        self.fail("the analyticsd container has no port named %r" % name)

    def assert_grpc_probe(self, probe_name):
        probe = self.container().get(probe_name)
        self.assertIsNotNone(probe, "the analyticsd container has no %s" % probe_name)
        other = [k for k in ("httpGet", "tcpSocket", "exec") if k in probe]
        self.assertIn("grpc", probe, "%s must be a native gRPC probe (grpc: {port: ...}), found %s"
                      % (probe_name, other or sorted(probe)))
        grpc_port = self.container_port("grpc")
        self.assertEqual(grpc_port, GRPC_PORT,
                         "the container port named grpc is %r, expected %d" % (grpc_port, GRPC_PORT))
        self.assertEqual((probe.get("grpc") or {}).get("port"), grpc_port,
                         "%s probes port %r, not the container's grpc port %r"
                         % (probe_name, (probe.get("grpc") or {}).get("port"), grpc_port))

    def stages(self):
        self.assertIsNotNone(self.dockerfile, "no Dockerfile at %s" % self.dockerfile_path)
        return split_stages(self.dockerfile)

    @staticmethod
    def runs(stage):
        return [args for keyword, args in stage["instructions"] if keyword == "RUN"]

    # ---- Kubernetes manifests ----

    def test_manifests_parse(self):
        self.assertTrue(self.files, "no *.yaml files in %s" % self.k8s_dir)
        self.assertEqual(self.parse_errors, [], "k8s/ files that do not parse as YAML")

    def test_every_document_has_api_version_kind_and_name(self):
        bad = []
        for name, doc in self.docs:
            if not isinstance(doc, dict):
                bad.append("%s: document is a %s, not a mapping" % (name, type(doc).__name__))
                continue
            missing = [k for k in ("apiVersion", "kind") if not doc.get(k)]
            if not (doc.get("metadata") or {}).get("name"):
                missing.append("metadata.name")
            if missing:
                bad.append("%s (%s): missing %s" % (name, doc.get("kind"), ", ".join(missing)))
        self.assertEqual(bad, [], "manifests without apiVersion/kind/metadata.name")

    def test_deployment_has_one_replica(self):
        replicas = (self.one("Deployment").get("spec") or {}).get("replicas")
        self.assertEqual(replicas, 1, "Deployment replicas is %r: the embedded SQLite store allows "
                         "one writer, so it must be exactly 1" % replicas)

    def test_deployment_strategy_is_recreate(self):
        strategy = ((self.one("Deployment").get("spec") or {}).get("strategy") or {}).get("type")
        self.assertEqual(strategy, "Recreate", "Deployment strategy is %r: a rolling update would run "
                         "two writers on one SQLite store; use Recreate" % strategy)

    def test_deployment_reads_configmap(self):
        cm_name = (self.one("ConfigMap").get("metadata") or {}).get("name")
        refs = [e.get("configMapRef", {}).get("name") for e in self.container().get("envFrom") or []]
        self.assertIn(cm_name, refs, "the analyticsd container's envFrom does not reference ConfigMap %r "
                      "(references: %r)" % (cm_name, refs))

    def probe_service(self, probe_name):
        return ((self.container().get(probe_name) or {}).get("grpc") or {}).get("service", "")

    def test_liveness_probe_is_grpc(self):
        self.assert_grpc_probe("livenessProbe")

    def test_liveness_and_startup_probes_ask_the_liveness_service(self):
        # Service "" is readiness: NOT_SERVING on a full disk, which must take
        # the pod out of the Service, not restart it again and again.
        for probe in ("livenessProbe", "startupProbe"):
            self.assertEqual(self.probe_service(probe), "liveness",
                             "%s must name grpc service 'liveness'" % probe)

    def test_readiness_probe_is_grpc(self):
        self.assert_grpc_probe("readinessProbe")
        self.assertEqual(self.probe_service("readinessProbe"), "",
                         "readinessProbe must ask service '' (readiness)")

    def test_container_ports_match_configmap(self):
        data = self.configmap_data()
        for var, name, default in (("PORT", "http", HTTP_PORT), ("GRPC_PORT", "grpc", GRPC_PORT)):
            expected = int(data.get(var, default))
            self.assertEqual(self.container_port(name), expected,
                             "container port %r is %r but the service listens on %s=%d"
                             % (name, self.container_port(name), var, expected))

    def test_pvc_is_mounted_at_data_dir(self):
        data_dir = self.configmap_data().get("DATA_DIR")
        self.assertTrue(data_dir, "the ConfigMap does not set DATA_DIR")
        claim = (self.one("PersistentVolumeClaim").get("metadata") or {}).get("name")
        volumes = [v.get("name") for v in self.pod_spec().get("volumes") or []
                   if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim]
        self.assertTrue(volumes, "no pod volume uses PersistentVolumeClaim %r" % claim)
        mounts = [m.get("mountPath") for m in self.container().get("volumeMounts") or []
                  if m.get("name") in volumes]
        self.assertIn(_norm_path(data_dir), [_norm_path(m) for m in mounts],
                      "PersistentVolumeClaim %r is mounted at %r, not at DATA_DIR=%r"
                      % (claim, mounts, data_dir))

    def test_configmap_keys_are_known_variables(self):
        data = self.configmap_data()
        unknown = sorted(set(data) - CONFIG_VARS)
        self.assertEqual(unknown, [], "ConfigMap keys that analyticsd does not read")
        self.assertIn("DATA_DIR", data, "the ConfigMap must set DATA_DIR (where the PVC is mounted)")
        not_strings = sorted(k for k, v in data.items() if not isinstance(v, str))
        self.assertEqual(not_strings, [], "ConfigMap values must be quoted strings")

    def test_service_ports_target_container_ports(self):
        service = self.one("Service")
        ports = (service.get("spec") or {}).get("ports") or []
        by_port = {p.get("port"): p for p in ports}
        for wanted in (HTTP_PORT, GRPC_PORT):
            self.assertIn(wanted, by_port, "the Service does not expose port %d" % wanted)
        container_ports = self.container().get("ports") or []
        names = {p.get("name") for p in container_ports}
        numbers = {p.get("containerPort") for p in container_ports}
        for p in ports:
            target = p.get("targetPort", p.get("port"))
            ok = target in names if isinstance(target, str) else target in numbers
            self.assertTrue(ok, "Service port %r targets %r, which is not a container port (names %r, "
                            "numbers %r)" % (p.get("port"), target, sorted(names - {None}), sorted(numbers)))

    def test_service_selects_the_pods(self):
        selector = (self.one("Service").get("spec") or {}).get("selector") or {}
        labels = (((self.one("Deployment").get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        self.assertTrue(selector, "the Service has no selector")
        mismatched = {k: v for k, v in selector.items() if labels.get(k) != v}
        self.assertEqual(mismatched, {}, "Service selector entries that the pod template's labels lack")

    def test_termination_grace_exceeds_shutdown_grace(self):
        grace_ms = self.configmap_data().get("SHUTDOWN_GRACE_MS")
        self.assertIsNotNone(grace_ms, "the ConfigMap does not set SHUTDOWN_GRACE_MS")
        termination_s = self.pod_spec().get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_S)
        self.assertGreater(int(termination_s) * 1000, int(grace_ms),
                           "terminationGracePeriodSeconds=%s is not longer than SHUTDOWN_GRACE_MS=%s: "
                           "SIGKILL would cut the drain short" % (termination_s, grace_ms))

    def test_runs_as_non_root(self):
        pod_sc = self.pod_spec().get("securityContext") or {}
        ctr_sc = self.container().get("securityContext") or {}
        non_root = ctr_sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        uid = ctr_sc.get("runAsUser", pod_sc.get("runAsUser"))
        self.assertTrue(non_root, "securityContext.runAsNonRoot is not true for the analyticsd container")
        self.assertNotEqual(uid, 0, "securityContext.runAsUser is 0 (root)")

    def test_resources_have_requests_and_limits(self):
        resources = self.container().get("resources") or {}
        for part in ("requests", "limits"):
            got = resources.get(part) or {}
            for res in ("cpu", "memory"):
                self.assertIn(res, got, "the analyticsd container sets no resources.%s.%s" % (part, res))

    def test_kustomization_lists_every_manifest(self):
        kust_path = os.path.join(self.k8s_dir, KUSTOMIZATION)
        self.assertTrue(os.path.exists(kust_path), "no %s in k8s/" % KUSTOMIZATION)
        kust = [d for n, d in self.docs if n == KUSTOMIZATION]
        self.assertEqual(len(kust), 1, "%s must hold one document" % KUSTOMIZATION)
        resources = kust[0].get("resources") or []
        manifests = sorted(os.path.basename(f) for f in self.files
                           if os.path.basename(f) not in (KUSTOMIZATION, SECRET_EXAMPLE,
                                                          SERVICE_MONITOR))
        self.assertEqual(sorted(set(manifests) - set(resources)), [],
                         "k8s/ manifests missing from %s resources" % KUSTOMIZATION)
        self.assertEqual(sorted(set(resources) - set(manifests)), [],
                         "%s lists resources that are not files in k8s/" % KUSTOMIZATION)

    # ---- monitoring and images ----

    def test_pods_carry_scrape_annotations(self):
        for component in ("analyticsd", "restbridge"):
            tmpl = (self.one("Deployment", component).get("spec") or {}).get("template") or {}
            ann = (tmpl.get("metadata") or {}).get("annotations") or {}
            self.assertEqual(ann.get("prometheus.io/scrape"), "true", component)
            self.assertEqual(ann.get("prometheus.io/port"), str(HTTP_PORT), component)
            self.assertEqual(ann.get("prometheus.io/path"), "/metrics", component)

    def test_service_monitor_scrapes_both_services(self):
        mon = self.one("ServiceMonitor")
        self.assertEqual(mon.get("apiVersion"), "monitoring.coreos.com/v1")
        kust = [d for n, d in self.docs if n == KUSTOMIZATION][0]
        self.assertNotIn(SERVICE_MONITOR, kust.get("resources") or [],
                         "the ServiceMonitor needs the operator's CRD: kubectl apply -k would fail")
        spec = mon.get("spec") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        self.assertTrue(match, "the ServiceMonitor selects no Service")
        endpoints = spec.get("endpoints") or []
        self.assertTrue(endpoints)
        for component in ("analyticsd", "restbridge"):
            service = self.one("Service", component)
            labels = (service.get("metadata") or {}).get("labels") or {}
            self.assertTrue(all(labels.get(k) == v for k, v in match.items()),
                            "the ServiceMonitor does not select the %s Service" % component)
            names = [p.get("name") for p in (service.get("spec") or {}).get("ports") or []]
            for ep in endpoints:
                self.assertIn(ep.get("port"), names, "endpoint port must name a Service port")
                self.assertEqual(ep.get("path", "/metrics"), "/metrics")

    def test_images_are_tagged_by_version(self):
        with open(os.path.join(REPO_ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
            version = re.search(r"project\(analyticsd VERSION ([0-9.]+)", f.read()).group(1)
        for component in ("analyticsd", "restbridge"):
            spec = ((self.one("Deployment", component).get("spec") or {}).get("template")
                    or {}).get("spec") or {}
            for c in spec.get("containers") or []:
                image = c.get("image", "")
                self.assertRegex(image, r":%s$" % re.escape(version),
                                 "%s: image %r is not tagged with the version %s"
                                 % (component, image, version))
        args = " ".join(a for k, a in self.stages()[-1]["instructions"] if k == "ARG")
        self.assertIn("VERSION=%s" % version, args, "the Dockerfile's VERSION default")

    def secret_refs(self, container):
        """(secret name, key, optional) of each env taken from a Secret."""
        return {e.get("name"): ((e.get("valueFrom") or {}).get("secretKeyRef") or {})
                for e in container.get("env") or [] if (e.get("valueFrom") or {}).get("secretKeyRef")}

    def test_secret_template_is_used_by_both_deployments_and_never_applied(self):
        path = os.path.join(self.k8s_dir, SECRET_EXAMPLE)
        with open(path, encoding="utf-8") as f:
            secret = yaml.safe_load(f)
        self.assertEqual(secret.get("kind"), "Secret")
        self.assertIn(SECRET_KEY, secret.get("stringData") or secret.get("data") or {})
        kust = [d for n, d in self.docs if n == KUSTOMIZATION][0]
        self.assertNotIn(SECRET_EXAMPLE, kust.get("resources") or [],
                         "the placeholder secret must not be applied")
        for name, c in (("analyticsd", self.container()), ("restbridge", self.bridge_container())):
            ref = self.secret_refs(c).get(SECRET_KEY)
            self.assertIsNotNone(ref, "%s does not take %s from a Secret" % (name, SECRET_KEY))
            self.assertEqual(ref.get("name"), secret["metadata"]["name"])
            self.assertEqual(ref.get("key"), SECRET_KEY)

    # ---- the remote REST bridge (k8s/restbridge-deployment.yaml) ----

    def test_restbridge_runs_the_bridge_against_the_service(self):
        c = self.bridge_container()
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        self.assertTrue(argv and argv[0].endswith("/analytics-restbridge"),
                        "the restbridge container does not run analytics-restbridge: %r" % argv)
        env = {e.get("name"): e.get("value") for e in c.get("env") or []}
        upstream = argv[argv.index("--upstream") + 1] if "--upstream" in argv else env.get("RESTBRIDGE_UPSTREAM")
        self.assertIsNotNone(upstream, "no --upstream and no RESTBRIDGE_UPSTREAM")
        service = self.one("Service")
        ports = [p.get("port") for p in (service.get("spec") or {}).get("ports") or []]
        host, _, port = upstream.rpartition(":")
        self.assertEqual(host, service["metadata"]["name"], "the upstream is not analyticsd's Service")
        self.assertIn(int(port), ports)
        self.assertEqual(int(port), GRPC_PORT)
        self.assertEqual(c.get("image"), self.container().get("image"),
                         "the bridge should run analyticsd's image (it holds both binaries)")

    def test_restbridge_env_is_known_variables(self):
        env = {e.get("name") for e in self.bridge_container().get("env") or []}
        self.assertEqual(sorted(env - CONFIG_VARS - BRIDGE_VARS),
                         [], "environment variables the bridge does not read")

    def test_restbridge_probes_are_http(self):
        c = self.bridge_container()
        http_port = [p for p in c.get("ports") or [] if p.get("name") == "http"]
        self.assertEqual([p.get("containerPort") for p in http_port], [HTTP_PORT])
        ready = (c.get("readinessProbe") or {}).get("httpGet") or {}
        self.assertEqual(ready.get("path"), "/health", "readiness must follow the upstream (/health)")
        self.assertIn(ready.get("port"), ("http", HTTP_PORT))
        live = (c.get("livenessProbe") or {}).get("httpGet") or {}
        self.assertTrue(live, "the bridge has no HTTP liveness probe")
        self.assertNotEqual(live.get("path"), "/health",
                            "liveness must not depend on the upstream (use /metrics)")

    def test_restbridge_is_stateless_and_scales(self):
        dep = self.one("Deployment", "restbridge")
        spec = dep.get("spec") or {}
        self.assertGreaterEqual(spec.get("replicas", 1), 2)
        self.assertEqual((spec.get("strategy") or {}).get("type", "RollingUpdate"), "RollingUpdate")
        pod = (spec.get("template") or {}).get("spec") or {}
        self.assertFalse(pod.get("volumes"), "the bridge keeps no state: no volumes")
        self.assertTrue((pod.get("securityContext") or {}).get("runAsNonRoot"))
        resources = self.bridge_container().get("resources") or {}
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                self.assertIn(res, resources.get(part) or {})

    def test_restbridge_service_selects_its_pods_only(self):
        service = self.one("Service", "restbridge")
        selector = (service.get("spec") or {}).get("selector") or {}
        labels = (((self.one("Deployment", "restbridge").get("spec") or {}).get("template") or {})
                  .get("metadata") or {}).get("labels") or {}
        self.assertEqual({k: v for k, v in selector.items() if labels.get(k) != v}, {})
        analyticsd = (((self.one("Deployment").get("spec") or {}).get("template") or {})
                      .get("metadata") or {}).get("labels") or {}
        self.assertFalse(all(analyticsd.get(k) == v for k, v in selector.items()),
                         "the bridge's Service would also select analyticsd's pods")
        ports = (service.get("spec") or {}).get("ports") or []
        self.assertEqual([(p.get("port"), p.get("targetPort")) for p in ports], [(HTTP_PORT, "http")])

    # ---- Dockerfile ----

    def test_dockerfile_is_multi_stage(self):
        self.assertGreaterEqual(len(self.stages()), 2,
                                "the Dockerfile needs a build stage and a runtime stage (two FROM lines)")

    def test_dockerfile_starts_from_debian_12(self):
        aliases = set()
        for stage in self.stages():
            image = stage["image"]
            self.assertTrue(image in aliases or DEBIAN_12_IMAGE.match(image),
                            "FROM %r: every stage must start from debian:12 or debian:12-slim" % image)
            if stage["alias"]:
                aliases.add(stage["alias"])

    def test_dockerfile_build_stage_installs_deps_and_cmake_installs(self):
        build_runs = [r for s in self.stages()[:-1] for r in self.runs(s)]
        self.assertTrue(any(re.search(r"install-deps\.sh\s+build\b", r) for r in build_runs),
                        "no build stage RUNs scripts/install-deps.sh build")
        self.assertTrue(any("cmake --install" in r for r in build_runs),
                        "no build stage RUNs cmake --install")

    def test_dockerfile_runtime_stage_installs_runtime_deps(self):
        runtime = self.stages()[-1]
        self.assertTrue(any(re.search(r"install-deps\.sh\s+runtime\b", r) for r in self.runs(runtime)),
                        "the runtime stage does not RUN install-deps.sh runtime")
        copied = " ".join(a for k, a in self.dockerfile if k in ("COPY", "ADD"))
        self.assertIn("scripts/install-deps.sh", copied, "the Dockerfile never copies scripts/install-deps.sh")

    def test_dockerfile_exposes_ports(self):
        exposed = set()
        for keyword, args in self.stages()[-1]["instructions"]:
            if keyword == "EXPOSE":
                exposed.update(p.split("/")[0] for p in args.split())
        for port in (HTTP_PORT, GRPC_PORT):
            self.assertIn(str(port), exposed, "the runtime stage does not EXPOSE %d" % port)

    def test_dockerfile_runs_as_non_root(self):
        users = [a for k, a in self.stages()[-1]["instructions"] if k == "USER"]
        self.assertTrue(users, "the runtime stage sets no USER, so it runs as root")
        user = users[-1].split(":")[0]
        self.assertNotIn(user, ("root", "0"), "the runtime stage runs as USER %r" % users[-1])

    def test_dockerfile_data_dir_is_the_volume(self):
        data_dir = self.configmap_data().get("DATA_DIR")
        volumes = []
        for keyword, args in self.stages()[-1]["instructions"]:
            if keyword == "VOLUME":
                volumes.extend(yaml.safe_load(args) if args.startswith("[") else shlex.split(args))
        self.assertIn(_norm_path(data_dir), [_norm_path(v) for v in volumes],
                      "the Dockerfile's VOLUME %r does not include DATA_DIR=%r" % (volumes, data_dir))

    def test_dockerfile_entrypoint_is_analyticsd(self):
        entry = [a for k, a in self.stages()[-1]["instructions"] if k == "ENTRYPOINT"]
        self.assertTrue(entry, "the runtime stage has no ENTRYPOINT")
        self.assertRegex(entry[-1], r"analyticsd\b", "ENTRYPOINT does not start analyticsd")
        signals = [a for k, a in self.dockerfile if k == "STOPSIGNAL"]
        self.assertIn(signals[-1] if signals else "SIGTERM", ("SIGTERM", "15"),
                      "STOPSIGNAL must be SIGTERM: that is what starts the drain")

    def test_dockerfile_has_healthcheck(self):
        checks = [a for k, a in self.stages()[-1]["instructions"] if k == "HEALTHCHECK"]
        self.assertEqual(len(checks), 1, "the runtime stage needs one HEALTHCHECK")
        opts, _, cmd = checks[0].partition("CMD")
        self.assertTrue(cmd, "HEALTHCHECK without CMD: %r" % checks[0])
        argv = yaml.safe_load(cmd.strip())
        self.assertIsInstance(argv, list, "use the exec form: the slim image has no curl")
        self.assertEqual(argv, ["/opt/analyticsd/bin/analyticsd", "healthcheck"])
        for opt in ("--interval=", "--timeout=", "--start-period="):
            self.assertIn(opt, opts)


def main():
    global REPO_ROOT
    args = sys.argv[1:]
    # A first argument that is a directory is the repository root; anything
    # else (test names, -v, -k PATTERN) goes to unittest.
    if args and os.path.isdir(args[0]):
        REPO_ROOT = os.path.abspath(args.pop(0))
    unittest.main(argv=[sys.argv[0]] + args, verbosity=2)


if __name__ == "__main__":
    main()
