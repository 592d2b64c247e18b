"""Coverage-guided fuzzing of topic and payload decoding (atheris / libFuzzer), for long runs off CI.

    pip install atheris          # not a ptmon dependency: only this harness needs it
    mkdir -p fuzz-corpus
    python bench/fuzz_decode.py fuzz-corpus -max_total_time=3600 -max_len=8192 -timeout=20
    python bench/fuzz_decode.py crash-<hash>           # re-run one input that failed

Each input becomes a stream of messages (registry topics whose ids carry line-protocol and
SQL metacharacters, gateway statuses, wrong and invented topics; payloads that are plausible
heartbeats, raw bytes, text, JSON nested up to 100,000 levels, padding around the size limit)
with random limits (``device_rate``, ``window``, ``max_payload`` up to 1 MB), and goes through
:meth:`Decoder.decode` and :meth:`Engine.apply` twice: in random batches and one message at a
time. A failure is any exception or crash, or:

* a message not counted exactly once (Σ rejects + accepted + gateway statuses ≠ messages);
* reject counts by kind, or the engine's per-device state and counter deltas, differing from
  the slow per-message reference of ``tests/test_fuzz.py``;
* the two batchings disagreeing (live and replay batch differently);
* an unknown topic kept longer than the bound or with control characters.

libFuzzer writes the failing input to ``crash-<hash>``; ``-jobs=N -workers=N`` runs several.
The CI-sized version of these properties is ``tests/test_fuzz.py`` (hypothesis).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy  # noqa: F401  (imported before instrumenting: only ptmon's own code is instrumented)
import orjson  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atheris


def _instrumented_imports() -> object:
    """Coverage of ptmon's own modules, without atheris's comparison (dataflow) tracing: that keeps
    every numpy comparison result alive (measured: RSS +35 KB an input, libFuzzer's 2 GB limit
    within 55,000 inputs; flat without it). The harness feeds the interesting strings itself."""
    try:
        from atheris.import_hook import HookManager

        return HookManager({"collector"}, set(), enable_loader_override=True, trace_dataflow=False)
    except (ImportError, TypeError):  # another atheris: its public hook, dataflow traced
        return atheris.instrument_imports(include=["collector"])


with _instrumented_imports():  # type: ignore[attr-defined]
    from ptmon.batch import REJECT_KINDS
    from ptmon.decode import MAX_JSON_DEPTH, TRACKED_TOPIC_CHARS, Decoder
    from ptmon.engine import Engine
from ptmon.registry import Registry, parse_registry
from ptmon.rules import load_rules
from tests.test_fuzz import DEVICES, GATEWAYS, Reference, assert_engine_matches, run_engine

T0 = 1_793_462_400
KEYS = ["seq", "boot", "bat", "rssi", "ts", "reads", "read_ok", "face_try", "face_ok", "plate_try", "plate_ok", "x"]
STATUSES = ["online", "offline", " online\n", "ONLINE", ""]


def build_registry() -> Registry:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["device_id", "contract", "type", "street", "scenario", "community", "gateway", "accepted_on", "retired_on"])
    for i, (device_id, contract, type_code, street) in enumerate(DEVICES):
        writer.writerow([device_id, contract, type_code, street, "scn", f"c{i}", GATEWAYS[i % len(GATEWAYS)], "2026-01-01", ""])
    return parse_registry(out.getvalue(), load_rules())


REGISTRY = build_registry()


def payload(fdp: atheris.FuzzedDataProvider, max_payload: int) -> bytes | str:
    how = fdp.ConsumeIntInRange(0, 7)
    if how == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    if how == 1:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 300))
    if how == 2:  # deep nesting, past orjson's limit of 1,024 levels and where orjson 3.8 crashed (53,000)
        depth = fdp.PickValueInList([MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1_000, 60_000, 100_000])
        opener, closer = fdp.PickValueInList([("[", "]"), ('{"":', "}"), ('[{"a":', "}]")])
        text = '{"x":' + opener * depth + "1" + closer * depth + "}"
        return text[: fdp.ConsumeIntInRange(0, len(text))] if fdp.ConsumeBool() else text
    if how == 3:  # padding around the size limit
        size = max_payload + fdp.ConsumeIntInRange(-8, 8)
        char = fdp.PickValueInList(["x", "é", "中", "🚀"])
        return '{"seq":1,"p":"' + char * max(0, (size - 16) // len(char.encode())) + '"}'
    # an object of wire-contract keys with fuzzed values (numbers, strings, bools, nesting)
    fields = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        key = fdp.PickValueInList(KEYS)
        kind = fdp.ConsumeIntInRange(0, 5)
        if kind == 0:
            value = str(fdp.ConsumeIntInRange(-(2**40), 2**41))
        elif kind == 1:
            value = json.dumps(fdp.ConsumeFloat())
        elif kind == 2:
            value = fdp.ConsumeUnicode(24) if fdp.ConsumeBool() else json.dumps(fdp.ConsumeUnicode(24))
        elif kind == 3:
            value = fdp.PickValueInList(["true", "false", "null", "[]", "{}", "1e400", "-0.0", "1" * 25, "1" * 400,
                                         "18446744073709551616", "9007199254740993", "NaN", "Infinity"])
        else:
            value = str(fdp.ConsumeIntInRange(0, 200))
        fields[key] = value
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


def topic(fdp: atheris.FuzzedDataProvider) -> str:
    how = fdp.ConsumeIntInRange(0, 5)
    device_id, contract, _, street = fdp.PickValueInList(DEVICES)
    if how <= 2:
        return f"putuo/{contract}/{street}/{device_id}/hb"
    if how == 3:
        return f"putuo/gw/{fdp.PickValueInList([*GATEWAYS, 'gw-x'])}/status"
    if how == 4:
        parts = [fdp.PickValueInList(["putuo", "iot", "cam", "gw", "taopu", "wanli", device_id, "hb", "status", "+", "#", ""])
                 for _ in range(fdp.ConsumeIntInRange(0, 6))]
        return "/".join(parts)
    return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 200))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limits = {"device_rate": fdp.PickValueInList([0, 1, 3, 600]), "window": fdp.PickValueInList([1, 60]),
              "max_payload": fdp.PickValueInList([4096, 4096, 2**20])}
    t = T0 + fdp.ConsumeIntInRange(0, 3600)
    messages = []
    for _ in range(fdp.ConsumeIntInRange(1, 40)):
        t += fdp.PickValueInList([0, 0, 0.001, 1, 30, 60, -1, -30])
        name = topic(fdp)
        body = fdp.PickValueInList(STATUSES) if name.startswith("putuo/gw/") and fdp.ConsumeBool() else payload(
            fdp, limits["max_payload"])
        messages.append((t, name, body))
    cut = fdp.ConsumeIntInRange(0, len(messages))

    decoder, engine, sums, events = run_engine(REGISTRY, [messages[:cut], messages[cut:]], **limits)
    assert set(decoder.rejects) <= set(REJECT_KINDS), decoder.rejects
    assert sum(decoder.rejects.values()) + decoder.accepted + events == len(messages)
    assert all(len(k) <= TRACKED_TOPIC_CHARS + 1 and k.isprintable() for k in decoder.unknown_topics)

    ref = Reference(REGISTRY, limits["device_rate"], limits["window"], limits["max_payload"])
    for message in messages:
        ref.message(*message)
    assert dict(decoder.rejects) == dict(+ref.rejects), (dict(decoder.rejects), dict(+ref.rejects))
    assert_engine_matches(REGISTRY, engine, sums, ref)

    each = run_engine(REGISTRY, [[m] for m in messages], **limits)
    assert (dict(each[0].rejects), each[0].accepted, each[3]) == (dict(decoder.rejects), decoder.accepted, events)
    assert (each[1].counters == engine.counters).all() and (each[1].last_heartbeat == engine.last_heartbeat).all()


def main() -> None:
    assert isinstance(Decoder, type) and isinstance(Engine, type)
    logging.disable(logging.WARNING)  # the decoder logs its first rejects of each kind, every input anew
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
