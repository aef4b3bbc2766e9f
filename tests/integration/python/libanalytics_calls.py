"""Drives libanalytics through ctypes in a process of its own and prints what
each step returned as one JSON object.

It runs apart from the tests because libanalytics links Debian's gRPC core
while grpcio carries its own copy: both in one process share symbol names,
and the process crashes at random later on. This file must never import grpc.

Usage: libanalytics_calls.py LIB TARGET SCENARIO
  token_refresh   token "first" and account "acct-7", a call; token "second",
                  a call; no token, a call; then a token with a newline.
  api_key         API key "ana_abc_def", a call, then a token on top; then a
                  client with both an API key and a token.
"""

import ctypes
import json
import sys

METHOD = b"/analytics.v1.MetricService/ListMetrics"


class Options(ctypes.Structure):
    """analytics_options_t."""
    _fields_ = [("target", ctypes.c_char_p), ("token", ctypes.c_char_p),
                ("timeout_ms", ctypes.c_int64), ("queue_capacity", ctypes.c_size_t),
                ("batch_size", ctypes.c_size_t), ("flush_interval_ms", ctypes.c_int64),
                ("max_retries", ctypes.c_int), ("backoff_base_ms", ctypes.c_int64),
                ("backoff_max_ms", ctypes.c_int64), ("close_timeout_ms", ctypes.c_int64),
                ("on_delivery_failure", ctypes.c_void_p), ("delivery_ctx", ctypes.c_void_p),
                ("proto_max_depth", ctypes.c_int),
                ("api_key", ctypes.c_char_p), ("account_id", ctypes.c_char_p)]


class Error(ctypes.Structure):
    """analytics_error_t."""
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class Library:
    def __init__(self, path, target):
        lib = ctypes.CDLL(path)
        lib.analytics_client_new.restype = ctypes.c_void_p
        lib.analytics_client_new.argtypes = [ctypes.POINTER(Options), ctypes.POINTER(Error)]
        lib.analytics_client_destroy.argtypes = [ctypes.c_void_p]
        lib.analytics_call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(Error)]
        lib.analytics_client_set_token.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                   ctypes.POINTER(Error)]
        self.lib = lib
        self.target = target

    def client(self, **kw):
        o = Options()
        self.lib.analytics_options_init(ctypes.byref(o))
        o.target = self.target.encode()
        o.close_timeout_ms = 1
        for k, v in kw.items():
            setattr(o, k, v.encode() if v is not None else None)
        err = Error()
        c = self.lib.analytics_client_new(ctypes.byref(o), ctypes.byref(err))
        return c, err.message.decode(errors="replace")

    def call(self, c):
        err = Error()
        out = ctypes.c_char_p()
        rc = self.lib.analytics_call(c, METHOD, None, ctypes.byref(out), ctypes.byref(err))
        return {"rc": rc, "code": err.code, "message": err.message.decode(errors="replace")}

    def set_token(self, c, token):
        return self.lib.analytics_client_set_token(c, token, None)


def token_refresh(lib):
    c, message = lib.client(token="first", account_id="acct-7")
    if not c:
        return {"created": False, "message": message}
    try:
        steps = {"created": True, "first": lib.call(c)}
        steps["set_second"] = lib.set_token(c, b"second")
        steps["second"] = lib.call(c)
        steps["set_none"] = lib.set_token(c, None)
        steps["none"] = lib.call(c)
        steps["set_bad"] = lib.set_token(c, b"bad\ntoken")
        return steps
    finally:
        lib.lib.analytics_client_destroy(c)


def api_key(lib):
    c, message = lib.client(api_key="ana_abc_def")
    if not c:
        return {"created": False, "message": message}
    try:
        steps = {"created": True, "call": lib.call(c)}
        steps["set_token"] = lib.set_token(c, b"t")
    finally:
        lib.lib.analytics_client_destroy(c)
    both, message = lib.client(api_key="ana_abc_def", token="t")
    steps["both_created"] = bool(both)
    steps["both_message"] = message
    if both:
        lib.lib.analytics_client_destroy(both)
    return steps


SCENARIOS = {"token_refresh": token_refresh, "api_key": api_key}

if __name__ == "__main__":
    lib_path, target, scenario = sys.argv[1:4]
    print(json.dumps(SCENARIOS[scenario](Library(lib_path, target))))
