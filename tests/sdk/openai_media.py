"""The official OpenAI SDK against aigw's media endpoints (native providers
behind them). Prints one line per call for the Rust test to check."""

import io

from openai import OpenAI

client = OpenAI()

image = client.images.generate(model="stable-image-core", prompt="a lighthouse", size="1024x1024")
print("image:", image.data[0].b64_json)

speech = client.audio.speech.create(model="eleven_flash_v2_5", input="Hello", voice="JBFqnCBsd6RMkjVDRZzb")
print("speech:", speech.read().decode())

audio = io.BytesIO(b"RIFF\x00\x01\x02WAVE")
audio.name = "hello.wav"
transcript = client.audio.transcriptions.create(model="universal-2", file=audio)
print("transcript:", transcript.text)

text = client.audio.transcriptions.create(model="universal-2", file=("hello.wav", b"RIFF", "audio/wav"), response_format="text")
print("text:", text.strip())

embedding = client.embeddings.create(model="embed-v4.0", input="hello")
print("embedding:", embedding.data[0].embedding)
