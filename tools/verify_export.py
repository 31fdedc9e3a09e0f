#!/usr/bin/env python3
"""Check a `ledger export --verifiable` (or `--proof`) file: no database, no product, standard
library only. Usage: python3 verify_export.py EXPORT [DIGEST_FILE...]; prints JSON, exit 0 if
every hash and digest matches, else 1. The chain is README's "Verifying an export"."""
import json
import sys
from hashlib import sha256


def need(ok, why):  # not `assert`: python -O must not skip a check
    if not ok:
        raise ValueError(why)


def link_input(r, proof):  # what the chain hashes for one line, as eventstore/chain.py
    if "stream_id" in r:  # a row in full: its digest from its columns
        body = b"\n" + r["data"].encode() + b"\n" + r["metadata"].encode()
        cols = [r["version"], r["type"], r["schema_version"], r["recorded_at"]]
        if r["stream_id"] == proof["stream"]:  # the proven stream: versions 1, 2, 3 ...
            need(proof["version"] is None or r["version"] == proof["version"] + 1, "gap")
            proof["version"], proof["events"] = r["version"], proof["events"] + 1
        if r["chain"] == 1:
            return sha256(json.dumps([r["stream_id"], *cols], separators=(",", ":"), ensure_ascii=False).encode() + body).digest()
        s, rest = sha256(r["stream_id"].encode()).digest(), sha256(json.dumps(cols, separators=(",", ":"), ensure_ascii=False).encode() + body).digest()
    elif r["chain"] == 1:  # an opaque version-1 row: a proof cannot tell its stream
        proof["from"] = r["position"] + 1
        need(len(bytes.fromhex(r["digest"])) == 32, "a digest has 32 bytes")
        return bytes.fromhex(r["digest"])
    else:  # an opaque version-2 row: it must belong to another stream
        s, rest = bytes.fromhex(r["stream_sha256"]), bytes.fromhex(r["rest_sha256"])
        need(proof["stream"] is None or s != sha256(proof["stream"].encode()).digest(), "not shown")
    need(r["chain"] == 2, "unknown chain version")
    return b"\x02" + sha256(s + rest).digest()


def verify(lines, digests):
    head = json.loads(lines[0])
    after, prev, pos = head["after"], bytes.fromhex(head["previous"]), head["after"]
    stream = head.get("stream_id") if head["kind"] == "proof" else None
    proof, extra = {"stream": stream, "from": after + 1, "version": None if after else 0, "events": 0}, {"kind": head["kind"]}

    def result(at=None, why=None):
        return {"ok": at is None, "events": pos - after, "head": prev.hex(), "first_bad_position": at, "reason": why, **extra}
    for name, d in digests.items():
        if d["position"] < after or (d["position"] == after and d["head"] != head["previous"]):
            return result(d["position"], f"{name}: position {d['position']} does not check")
    for line in lines[1:]:
        try:
            r = json.loads(line)
            x = link_input(r, proof)
            need(r["position"] == pos + 1, "missing or out of order")
            new = sha256(prev + r["position"].to_bytes(8, "big") + x).digest()
            bad = [n for n, d in digests.items() if d["position"] == pos + 1 and d["head"] != new.hex()]
            need(new.hex() == r["hash"] and not bad, f"does not hash to {bad or 'its hash'}")
        except Exception as error:  # any bad line is a failed check, at its position
            return result(pos + 1, f"position {pos + 1}: {error!r}")
        prev, pos = new, pos + 1
    if any(d["position"] > pos for d in digests.values()):
        return result(pos + 1, f"a digest lies beyond the export's end at {pos}")
    if pos != head["position"] or prev.hex() != head["head"]:
        return result(min(pos, head["position"]) + (pos != head["position"]), f"the export ends at {pos}, not at its header's head")
    extra.update({"stream_events": proof["events"], "complete_from": proof["from"]} if stream else {})
    return result()


if __name__ == "__main__":
    texts = [open(p, encoding="utf-8").read().splitlines() for p in sys.argv[1:]]  # noqa: SIM115
    digests = {f"{p}:{n}": json.loads(t) for p, ls in zip(sys.argv[2:], texts[1:], strict=True) for n, t in enumerate(ls, 1) if t.strip()}
    report = verify([t for t in texts[0] if t.strip()], digests)
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)
