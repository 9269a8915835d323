"""Drives aigw's Gemini API with the official google-genai Python SDK,
changing only the base URL (http_options) and the API key. BASE is aigw's
address, GEMINI_API_KEY the aigw key, MODEL the model to call."""

import json
import os

from google import genai
from google.genai import errors, types

BASE = os.environ["BASE"]
MODEL = os.environ["MODEL"]


def client(key):
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            base_url=BASE, timeout=30_000, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )


gemini = client(os.environ["GEMINI_API_KEY"])

r = gemini.models.generate_content(
    model=MODEL,
    contents="Say hello",
    config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=100),
)
print("text:", r.text)
print("finish:", r.candidates[0].finish_reason.value)
u = r.usage_metadata
print("usage:", u.prompt_token_count, u.candidates_token_count, u.total_token_count, u.cached_content_token_count)

texts = []
last = None
for chunk in gemini.models.generate_content_stream(model=MODEL, contents="Stream please"):
    texts.append(chunk.text or "")
    last = chunk
print("stream text:", "".join(texts))
print("stream finish:", last.candidates[0].finish_reason.value)
print("stream usage:", last.usage_metadata.prompt_token_count, last.usage_metadata.total_token_count)

weather = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="The weather in a city",
            parameters=types.Schema(
                type="OBJECT",
                properties={"city": types.Schema(type="STRING")},
                required=["city"],
            ),
        )
    ]
)
config = types.GenerateContentConfig(tools=[weather])
question = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
first = gemini.models.generate_content(model=MODEL, contents=[question], config=config)
call = first.function_calls[0]
print("tool call:", call.name, json.dumps(call.args, sort_keys=True))
answer = types.Content(
    role="user",
    parts=[types.Part.from_function_response(name=call.name, response={"sky": "sunny"})],
)
second = gemini.models.generate_content(
    model=MODEL, contents=[question, first.candidates[0].content, answer], config=config
)
print("tool answer:", second.text)

print("count:", gemini.models.count_tokens(model=MODEL, contents="count these words").total_tokens > 0)
names = [m.name for m in gemini.models.list()]
print("listed:", f"models/{MODEL}" in names)

bad = client("aig_wrong")
try:
    bad.models.generate_content(model=MODEL, contents="x")
except errors.APIError as e:
    print("bad key:", e.code, e.status)
try:
    gemini.models.generate_content(
        model=MODEL, contents="x", config=types.GenerateContentConfig(candidate_count=0)
    )
except errors.APIError as e:
    print("bad body:", e.code, e.status)
