"""Drives aigw's Responses API (`/v1/responses`) with the official openai
Python SDK, changing only base_url and api_key (OPENAI_BASE_URL /
OPENAI_API_KEY, as the SDK reads them). MODEL names the model to call."""

import json
import os

import openai
from openai import OpenAI

MODEL = os.environ["MODEL"]
client = OpenAI(max_retries=0, timeout=30)

plain = client.responses.create(model=MODEL, instructions="Be brief.", input="Say hello",
                                max_output_tokens=100)
print("plain:", plain.output_text)
print("plain id:", plain.id.startswith("resp_"), plain.object, plain.status)
print("usage:", plain.usage.input_tokens, plain.usage.output_tokens, plain.usage.total_tokens,
      plain.usage.input_tokens_details.cached_tokens,
      plain.usage.output_tokens_details.reasoning_tokens)

raw = client.responses.with_raw_response.create(model=MODEL, input="Say hello")
print("cost header:", raw.headers.get("x-aigw-cost-usd"))

kinds = []
text = ""
final = None
with client.responses.stream(model=MODEL, input="Stream please") as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    final = stream.get_final_response()
print("stream events:", ",".join(kinds))
print("stream text:", text, "|", final.output_text)
print("stream usage:", final.usage.input_tokens, final.usage.output_tokens)
print("stream cost:", (final.usage.model_extra or {}).get("cost_usd"))

tools = [{
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
history = [{"role": "user", "content": "Weather in Paris?"}]
first = client.responses.create(model=MODEL, input=history, tools=tools, store=False)
call = next(item for item in first.output if item.type == "function_call")
print("tool call:", call.name, call.arguments, call.call_id)
print("reasoning:", ",".join(item.type for item in first.output))
history += [item.model_dump(exclude_none=True) for item in first.output]
history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
second = client.responses.create(model=MODEL, input=history, tools=tools, store=False)
print("tool answer:", second.output_text)

done = None
args = ""
with client.responses.stream(model=MODEL, input="Weather in Paris?", tools=tools) as stream:
    for event in stream:
        if event.type == "response.function_call_arguments.delta":
            args += event.delta
    done = stream.get_final_response()
call = next(item for item in done.output if item.type == "function_call")
print("stream tool call:", ",".join(item.type for item in done.output), call.name, args)

# Stored responses: continued by id right after the answer (aigw waits for
# the recording), read back, listed, deleted.
stored = client.responses.create(model=MODEL, input="Weather in Paris?", tools=tools)
call = next(item for item in stored.output if item.type == "function_call")
cont = client.responses.create(
    model=MODEL, tools=tools, previous_response_id=stored.id,
    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
print("continued:", cont.output_text, cont.previous_response_id == stored.id)
got = client.responses.retrieve(cont.id)
print("retrieved:", got.id == cont.id, got.output_text)
items = client.responses.input_items.list(cont.id, order="asc")
print("input items:", ",".join(item.type for item in items.data), items.has_more)
client.responses.delete(stored.id)
try:
    client.responses.retrieve(stored.id)
except openai.NotFoundError as e:
    print("deleted:", e.status_code)

try:
    client.responses.create(model=MODEL, input="x", tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}])
except openai.BadRequestError as e:
    print("refused:", e.status_code, e.body.get("message"))

try:
    OpenAI(api_key="aig_wrong", max_retries=0).responses.create(model=MODEL, input="x")
except openai.AuthenticationError as e:
    print("bad key:", e.status_code)
