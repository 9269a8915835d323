"""Issue #3's acceptance, as a new user would try it: the official OpenAI
Python SDK against aigw (OPENAI_BASE_URL / OPENAI_API_KEY as usual), and for
each model named on the command line a plain chat, a streamed chat, a tool
call and a streamed tool call, each tool call answered with its result for
the model's final answer. Prints one JSON object per model; the Rust test
(tests/api/acceptance.rs) checks them."""

import json
import sys

from openai import OpenAI

client = OpenAI(max_retries=0, timeout=30)

SYSTEM = {"role": "system", "content": "Be brief."}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def usage_of(usage):
    return None if usage is None else [usage.prompt_tokens, usage.completion_tokens]


def plain(model):
    c = client.chat.completions.create(
        model=model, messages=[SYSTEM, {"role": "user", "content": "Say hello"}]
    )
    choice = c.choices[0]
    return {
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "usage": usage_of(c.usage),
    }


def streamed(model):
    stream = client.chat.completions.create(
        model=model,
        messages=[SYSTEM, {"role": "user", "content": "Say hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            choice = chunk.choices[0]
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if chunk.usage:
            usage = usage_of(chunk.usage)
    return {"content": text, "finish_reason": finish, "usage": usage, "chunks": chunks}


def call_of(call):
    return {
        "id": call.id,
        "type": call.type,
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
    }


def answer(model, messages, calls):
    """Sends each call's result back and returns the model's final answer."""
    for call in calls:
        city = json.loads(call.function.arguments)["city"]
        result = {"city": city, "temperature_c": 21}
        messages.append(
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
        )
    c = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    return c.choices[0].message.content


def tool(model):
    messages = [SYSTEM, {"role": "user", "content": "Weather in Paris?"}]
    c = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    choice = c.choices[0]
    calls = choice.message.tool_calls or []
    # The SDK's own message object goes back into the conversation.
    messages.append(choice.message)
    return {
        "calls": [call_of(t) for t in calls],
        "finish_reason": choice.finish_reason,
        "usage": usage_of(c.usage),
        "answer": answer(model, messages, calls),
    }


def tool_streamed(model):
    # The SDK's own stream helper assembles the tool-call deltas.
    messages = [SYSTEM, {"role": "user", "content": "Weather in Rome?"}]
    with client.chat.completions.stream(
        model=model,
        messages=messages,
        tools=TOOLS,
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    calls = choice.message.tool_calls or []
    # This time the assistant turn is rebuilt by hand, as many apps do.
    messages.append(
        {
            "role": "assistant",
            "content": choice.message.content,
            "tool_calls": [
                {
                    "id": t.id,
                    "type": "function",
                    "function": {"name": t.function.name, "arguments": t.function.arguments},
                }
                for t in calls
            ],
        }
    )
    return {
        "calls": [call_of(t) for t in calls],
        "finish_reason": choice.finish_reason,
        "usage": usage_of(final.usage),
        "answer": answer(model, messages, calls),
    }


for model in sys.argv[1:]:
    result = {"model": model}
    for name, run in [
        ("plain", plain),
        ("stream", streamed),
        ("tool", tool),
        ("tool_stream", tool_streamed),
    ]:
        try:
            result[name] = run(model)
        except Exception as e:  # reported to the Rust test, which fails on it
            result[name] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
