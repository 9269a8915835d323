"""Token classes through the official OpenAI Python SDK: for each model named
on the command line, a plain and a streamed chat; prints, per model, one JSON
object with the usage details the SDK parsed (cached, cache-write and
reasoning tokens) and aigw's cost (the header, and the stream's usage chunk
extension field). The Rust test (tests/api/token_classes.rs) checks them."""

import json
import sys

from openai import OpenAI

client = OpenAI(max_retries=0, timeout=30)
MESSAGES = [{"role": "user", "content": "Think, then say hi"}]


def details(usage):
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    extra = (prompt.model_extra or {}) if prompt else {}
    return {
        "prompt": usage.prompt_tokens,
        "completion": usage.completion_tokens,
        "cached": prompt.cached_tokens if prompt else None,
        # OpenAI's 2026 field, and aigw's split of it: extra fields to this SDK.
        "cache_write": getattr(prompt, "cache_write_tokens", None)
        if prompt
        else None,
        "cache_write_5m": extra.get("cache_write_5m_tokens"),
        "cache_write_1h": extra.get("cache_write_1h_tokens"),
        "reasoning": completion.reasoning_tokens if completion else None,
    }


for model in sys.argv[1:]:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    plain = details(raw.parse().usage)
    plain["cost"] = raw.headers.get("x-aigw-cost-usd")
    stream = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = None
    for chunk in stream:
        if chunk.usage:
            streamed = details(chunk.usage)
            streamed["cost"] = (chunk.usage.model_extra or {}).get("cost_usd")
    print(json.dumps({"model": model, "plain": plain, "stream": streamed}), flush=True)
