#!/usr/bin/env python3
"""Check a `ledger export --verifiable` (or `--proof`) file: no database, no product, standard
library only (Python >= 3.10). Usage: python3 verify_export.py EXPORT [DIGEST_FILE...]; prints
JSON; exit 0 if every hash and digest matches, 1 if not, 2 if a file cannot be read or a digest
file holds something else than digests. The chain is README's "Verifying an export"; every line
must be exactly what the exporter writes (the rules of eventstore/export.py), nothing more."""

import json
import sys
from hashlib import sha256

ZERO = "0" * 64  # the hash before position 1
HEADER = {"format": str, "kind": str, "after": int, "previous": str, "position": int, "head": str}
FULL = {"position": int, "stream_id": str, "version": int, "type": str, "schema_version": int,
        "recorded_at": str, "data": str, "metadata": str, "chain": int, "hash": str}  # fmt: skip
LINKS = {1: {"position": int, "chain": int, "digest": str, "hash": str},
         2: {"position": int, "chain": int, "stream_sha256": str, "rest_sha256": str, "hash": str}}  # fmt: skip
HEX = {"previous", "head", "hash", "digest", "stream_sha256", "rest_sha256"}


class Bad(Exception):
    """Why a line fails the check."""


def need(ok, why):  # not `assert`: python -O must not skip a check
    if not ok:
        raise Bad(why)


def parse(line):  # one line: UTF-8 JSON, no field given twice (readers differ on which wins)
    def once(pairs):
        need(len(dict(pairs)) == len(pairs), "the line gives a field twice")
        return dict(pairs)

    return json.loads(line.decode("utf-8"), object_pairs_hook=once)


def hex64(text, digits="0123456789abcdef"):
    return len(text) == 64 and all(c in digits for c in text)


def shape(value, fields, what):  # exactly these fields (type, not isinstance: true is no int)
    need(isinstance(value, dict), f"{what} is not a JSON object")
    missing, unknown = sorted(set(fields) - set(value)), sorted(set(value) - set(fields))
    need(not missing, f"{what} lacks {', '.join(missing)}")
    need(not unknown, f"{what} has the unknown field {', '.join(unknown)}")
    for name, kind in fields.items():
        a_kind = "an integer" if kind is int else "a string"
        need(type(value[name]) is kind, f"{what}'s {name} is not {a_kind}")
        if name in HEX:
            need(hex64(value[name]), f"{what}'s {name} is not 64 lowercase hexadecimal digits")


def read_header(lines):
    need(lines, "the file is empty")
    head = parse(lines[0])
    need(
        isinstance(head, dict) and head.get("format") == "ledger-export/1",
        "the first line is not a ledger-export/1 header",
    )
    need(head.get("kind") in ("full", "proof"), "the header's kind is neither full nor proof")
    shape(head, dict(HEADER, stream_id=str) if head["kind"] == "proof" else HEADER, "the header")
    need(
        0 <= head["after"] <= head["position"] < 2**63,
        "the header's after and position are not 0 <= after <= position < 2^63",
    )
    need(
        head["after"] or head["previous"] == ZERO,
        "an export from position 1 starts from the chain's start (previous: 64 zeros)",
    )
    need(head["kind"] == "full" or head["stream_id"], "the header's stream_id is empty")
    return head


def compact(value):  # J: compact JSON, UTF-8, not ASCII-escaped
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def link_input(r, proof):  # what the chain hashes for one line, as eventstore/chain.py
    if isinstance(r, dict) and "stream_id" in r:  # a row in full: its digest from its columns
        shape(r, FULL, "the row")
        need(r["chain"] in LINKS, f"the row's chain version {r['chain']} is unknown")
        need(
            proof["stream"] in (None, r["stream_id"]),
            f"a row of another stream shown in full (a proof shows {proof['stream']}'s)",
        )
        body = b"\n" + r["data"].encode() + b"\n" + r["metadata"].encode()
        cols = [r["version"], r["type"], r["schema_version"], r["recorded_at"]]
        if r["stream_id"] == proof["stream"]:  # the proven stream: versions 1, 2, 3 ...
            missing = f"{r['stream_id']}'s version {(proof['version'] or 0) + 1} is missing"
            need(proof["version"] is None or r["version"] == proof["version"] + 1, missing)
            proof["version"], proof["events"] = r["version"], proof["events"] + 1
        if r["chain"] == 1:
            return sha256(compact([r["stream_id"], *cols]) + body).digest()
        s, rest = sha256(r["stream_id"].encode()).digest(), sha256(compact(cols) + body).digest()
    else:  # an opaque link: only in a proof, only for another stream's row
        chain = r.get("chain") if isinstance(r, dict) else None
        need(type(chain) is int and chain in LINKS, "the line is not a row")
        shape(r, LINKS[chain], "the row")
        need(
            proof["stream"] is not None,
            "an opaque link where a full export shows every row in full",
        )
        if chain == 1:  # a version-1 row: a proof cannot tell its stream
            proof["from"] = r["position"] + 1
            return bytes.fromhex(r["digest"])
        s, rest = bytes.fromhex(r["stream_sha256"]), bytes.fromhex(r["rest_sha256"])
        need(
            s != sha256(proof["stream"].encode()).digest(),
            f"belongs to {proof['stream']} but is not shown",
        )
    return b"\x02" + sha256(s + rest).digest()


def why(error):  # one line for any failure: never a traceback
    if isinstance(error, Bad):
        return str(error)
    if isinstance(error, UnicodeError):  # not UTF-8, or a lone surrogate no UTF-8 can hold
        return "the line holds text that is not UTF-8"
    if isinstance(error, (ValueError, RecursionError)):
        return "the line is not JSON"
    return f"the line cannot be read ({type(error).__name__})"


def verify(lines, digests):  # digests: position -> (label, head)
    try:
        head = read_header(lines)
    except Exception as error:  # any unreadable header is a failed check
        reason = f"not a verifiable export: {why(error)}"
        return {
            "ok": False,
            "events": 0,
            "head": ZERO,
            "first_bad_position": None,
            "reason": reason,
        }
    after, stream = head["after"], head.get("stream_id")
    pos, prev = after, bytes.fromhex(head["previous"])
    proof = {"stream": stream, "from": after + 1, "version": None if after else 0, "events": 0}

    def result(at=None, reason=None):
        report = {"ok": at is None, "events": pos - after, "head": prev.hex()}
        report.update(first_bad_position=at, reason=reason, kind=head["kind"])
        if stream:
            report.update(
                stream_id=stream, stream_events=proof["events"], complete_from=proof["from"]
            )
        return report

    for at, (label, digest) in sorted(digests.items()):  # those the walk never meets
        if at < after:
            return result(
                at, f"{label}: position {at} is not checked here (the check starts after {after})"
            )
        if at == after and digest != prev.hex():
            return result(
                at,
                f"{label}: position {at} hashes to {prev.hex()}, not to the digest's head {digest}",
            )
    for line in lines[1:]:
        try:
            r = parse(line)
            x = link_input(r, proof)
            need(r["position"] == pos + 1, "missing, or a row out of order")
            new = sha256(prev + (pos + 1).to_bytes(8, "big") + x).digest()
            need(
                new.hex() == r["hash"],
                "the stored hash does not match the row's contents and the previous hash",
            )
            label, digest = digests.get(pos + 1, ("", new.hex()))
            need(
                digest == new.hex(), f"hashes to {new.hex()}, not to the head of {label}, {digest}"
            )
        except Exception as error:  # any bad line is a failed check, at its position
            return result(pos + 1, f"position {pos + 1}: {why(error)}")
        prev, pos = new, pos + 1
    beyond = sorted(at for at in digests if at > pos)
    if beyond:
        return result(
            pos + 1,
            f"{digests[beyond[0]][0]}: position {beyond[0]} is beyond the export's end at {pos}",
        )
    if pos != head["position"]:
        return result(
            min(pos, head["position"]) + 1,
            f"the export ends at {pos}, but its header says {head['position']}",
        )
    if prev.hex() != head["head"]:
        return result(
            pos, f"the recomputed head at {pos} differs from the hash the export's header gives"
        )
    return result()


def read_digests(path, text):  # one digest, or one per line, as `ledger digest` writes them
    found = []
    lines = [line for line in text.split("\n") if line.strip()] or [""]
    for number, line in enumerate(lines, start=1):
        label = path if len(lines) == 1 else f"{path}:{number}"
        try:
            d = json.loads(line)
            at, head = d["position"], d["head"]
        except Exception:
            raise Bad(f"{label}: not a digest (JSON with position and head)") from None
        hexa = isinstance(head, str) and hex64(head, "0123456789abcdefABCDEF")
        need(
            type(at) is int and at >= 0 and hexa,
            f"{label}: not a digest (a position and a 64-digit hex head)",
        )
        found.append((at, label, head.lower()))
    return found


def main(paths):
    if not paths:
        print("usage: python3 verify_export.py EXPORT [DIGEST_FILE...]", file=sys.stderr)
        return 2
    try:
        blobs = []
        for path in paths:
            with open(path, "rb") as file:
                blobs.append(file.read())
        digests = {}
        for path, blob in zip(paths[1:], blobs[1:], strict=True):
            try:
                text = blob.decode("utf-8")
            except UnicodeError:
                raise Bad(f"{path}: not a digest (not UTF-8 text)") from None
            for at, label, head in read_digests(path, text):
                seen = digests.setdefault(at, (label, head))
                if seen[1] != head:  # at most one of them is this log's
                    reason = f"{seen[0]} and {label} name different heads at position {at}"
                    print(json.dumps({"ok": False, "reason": reason}, indent=2))
                    return 1
    except OSError as error:
        print(
            f"error: {error.filename}: cannot be read ({error.strerror or error})", file=sys.stderr
        )
        return 2
    except Bad as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = verify([line for line in blobs[0].split(b"\n") if line.strip()], digests)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
