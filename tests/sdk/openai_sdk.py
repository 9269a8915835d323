"""Drives aigw with the official OpenAI Python SDK, changing only base_url
and api_key (taken from OPENAI_BASE_URL / OPENAI_API_KEY as usual)."""

import openai
from openai import OpenAI

client = OpenAI(max_retries=0, timeout=30)

completion = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hello"}],
)
print("completion:", completion.choices[0].message.content)
print("usage:", completion.usage.total_tokens)

# aigw's cost header, read through the SDK's raw-response API.
raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hello"}],
)
print("cost header:", raw.headers.get("x-aigw-cost-usd"))
print("raw completion:", raw.parse().choices[0].message.content)

stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hi"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, usage, cost = "", None, None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage.total_tokens
        # aigw's extension field: kept by the SDK's models as an extra field.
        cost = getattr(chunk.usage, "cost_usd", None)
        assert cost == (chunk.usage.model_extra or {}).get("cost_usd"), chunk.usage
print("stream:", text)
print("stream usage:", usage)
print("stream cost:", repr(cost))

try:
    OpenAI(api_key="aig_wrong", max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
except openai.AuthenticationError as e:
    print("bad key:", e.status_code)
