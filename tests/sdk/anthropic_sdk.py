"""Drives aigw's Messages API with the official anthropic Python SDK,
changing only base_url and api_key (ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY,
as the SDK reads them). MODEL names the model to call."""

import json
import os

import anthropic
from anthropic import Anthropic

MODEL = os.environ["MODEL"]
client = Anthropic(max_retries=0, timeout=30)

message = client.messages.create(
    model=MODEL,
    max_tokens=100,
    system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    messages=[{"role": "user", "content": "Say hello"}],
)
print("message:", message.content[0].text)
print("stop:", message.stop_reason)
print("usage:", json.dumps(message.usage.model_dump(exclude_none=True), sort_keys=True))

raw = client.messages.with_raw_response.create(
    model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
)
print("cost header:", raw.headers.get("x-aigw-cost-usd"))

with client.messages.stream(
    model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Stream please"}]
) as stream:
    kinds = [event.type for event in stream]
    final = stream.get_final_message()
print("stream events:", ",".join(k for k in kinds if k not in ("text",)))
print("stream text:", "".join(b.text for b in final.content if b.type == "text"))
print("stream stop:", final.stop_reason)
print("stream usage:", final.usage.input_tokens, final.usage.output_tokens)

tools = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
history = [{"role": "user", "content": "Weather in Paris?"}]
first = client.messages.create(model=MODEL, max_tokens=100, tools=tools, messages=history)
call = next(b for b in first.content if b.type == "tool_use")
print("tool call:", call.name, json.dumps(call.input), first.stop_reason)
history += [
    {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
]
second = client.messages.create(model=MODEL, max_tokens=100, tools=tools, messages=history)
print("tool answer:", second.content[0].text)

with client.messages.stream(model=MODEL, max_tokens=100, tools=tools,
                            messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
    streamed = stream.get_final_message()
call = next(b for b in streamed.content if b.type == "tool_use")
print("stream tool call:", ",".join(b.type for b in streamed.content), call.name,
      json.dumps(call.input), streamed.stop_reason)

count = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Count me"}])
print("count:", count.input_tokens)

try:
    Anthropic(api_key="aig_wrong", max_retries=0).messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
except anthropic.AuthenticationError as e:
    print("bad key:", e.status_code, e.body["error"]["type"])

try:
    client.messages.create(model=MODEL, max_tokens=5, messages=[])
except anthropic.BadRequestError as e:
    print("bad body:", e.status_code, e.body["error"]["type"])
