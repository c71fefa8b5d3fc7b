"""The etcd JSON gateway behaviours that controlplane/etcd*.c relies on, checked
against the installed etcd: if an etcd upgrade changes one, this says which."""
import json
import urllib.request

from corvid_testlib import Checks
from etcd_testlib import Etcd, b64, unb64

etcd = Etcd()


def int64_fields_are_strings_and_zeros_omitted():
    _, r = etcd.call("/v3/kv/put", {"key": b64("/g/a"), "value": b64("1")})
    assert isinstance(r["header"]["revision"], str), r
    _, r = etcd.call("/v3/kv/range", {"key": b64("/g/none")})
    assert "kvs" not in r and "count" not in r, r
    _, r = etcd.call("/v3/kv/range", {"key": b64("/g/a")})
    kv = r["kvs"][0]
    assert unb64(kv["key"]) == "/g/a" and unb64(kv["value"]) == "1", kv
    assert kv["version"] == "1" and "lease" not in kv, kv
    _, r = etcd.call("/v3/kv/deleterange", {"key": b64("/g/none")})
    assert "deleted" not in r, r


def errors_carry_code_and_message():
    status, r = etcd.call("/v3/kv/range", {"key": b64("/g/a"), "revision": "999999"})
    assert status == 400 and r["code"] == 11 and "future revision" in r["message"], (status, r)
    status, r = etcd.call("/v3/lease/revoke", {"ID": "12345"})
    assert status == 404 and r["code"] == 5, (status, r)


def lease_ttl_spelling_and_lost_keepalive():
    _, r = etcd.call("/v3/lease/grant", {"TTL": "5"})
    assert r["TTL"] == "5" and r["ID"], r
    # The wrong spelling is silently ignored: etcd grants its minimum TTL instead.
    _, r = etcd.call("/v3/lease/grant", {"ttl": "5"})
    assert r["TTL"] != "5", r
    _, r = etcd.call("/v3/lease/keepalive", {"ID": "12345"})
    assert "result" in r and "TTL" not in r["result"], r


def txn_failure_omits_succeeded():
    cmp = [{"key": b64("/g/a"), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}]
    _, r = etcd.call("/v3/kv/txn", {"compare": cmp, "success": [{"request_put": {"key": b64("/g/a")}}],
                                    "failure": [{"request_range": {"key": b64("/g/a")}}]})
    assert "succeeded" not in r and "response_range" in r["responses"][0], r


def watch_stream_and_compaction_cancel():
    for i in range(3):
        _, r = etcd.call("/v3/kv/put", {"key": b64("/g/w"), "value": b64("v%d" % i)})
    rev = int(r["header"]["revision"])
    req = urllib.request.Request(etcd.url + "/v3/watch", data=json.dumps(
        {"create_request": {"key": b64("/g/w"), "start_revision": str(rev - 2)}}).encode())
    with urllib.request.urlopen(req, timeout=5) as s:
        created, batch = json.loads(s.readline()), json.loads(s.readline())
    assert created["result"]["created"] is True, created
    events = batch["result"]["events"]
    assert len(events) == 3 and "type" not in events[0], batch  # historical events batched, PUT implied
    etcd.call("/v3/kv/compaction", {"revision": str(rev), "physical": True})
    req = urllib.request.Request(etcd.url + "/v3/watch", data=json.dumps(
        {"create_request": {"key": b64("/g/w"), "start_revision": str(rev - 2)}}).encode())
    with urllib.request.urlopen(req, timeout=5) as s:
        s.readline()
        cancel = json.loads(s.readline())["result"]
    assert cancel["canceled"] is True and cancel["compact_revision"] == str(rev), cancel


checks = Checks()
try:
    for fn in (int64_fields_are_strings_and_zeros_omitted, errors_carry_code_and_message,
               lease_ttl_spelling_and_lost_keepalive, txn_failure_omits_succeeded,
               watch_stream_and_compaction_cancel):
        checks.run(fn.__name__, fn)
finally:
    etcd.destroy()
checks.finish()
