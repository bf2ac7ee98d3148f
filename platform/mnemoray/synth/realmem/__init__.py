"""RealMem-style multi-agent synthesis as plain Python (no Ray): inputs, stage schemas and
validators, the per-persona dialogue state machine, the time-control check and the writer of
RealMem's public history format. The Ray layer that runs many personas against one engine
fleet is `mnemoray.distributed.data.synth_realmem`; see docs/ARCHITECTURE.md.

    inputs.py    RealMem persona/goal files or any persona JSON/JSONL -> persona seeds + errors
    prompts.py   the agents' prompts and JSON schemas
    plan.py      outline -> events -> session plans: build, parse, validate; the timeline
    timecheck.py the time-control validator
    machine.py   one persona as a state machine: next requests (LLM calls, encodes) out, replies in
    batching.py  a worker's batching of its personas' calls and sentence encodes (asyncio)
    public.py    RealMem's `<Name>_dialogues_256k.json` format (writer and reader)
    report.py    stats.json and report.md of a run
"""
