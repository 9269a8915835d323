"""The voyageai SDK, unchanged apart from its base URL and key, reranks
through aigw: one line per model in MODELS (comma-separated)."""

import os

import voyageai

client = voyageai.Client(
    api_key=os.environ["VOYAGE_API_KEY"],
    base_url=os.environ["VOYAGE_BASE_URL"],
    max_retries=0,
)
documents = ["Berlin is in Germany.", "Madrid is in Spain.", "Paris is the capital."]
for model in os.environ["MODELS"].split(","):
    ranked = client.rerank("capital of France?", documents, model=model, top_k=2)
    results = [(r.index, r.document, round(r.relevance_score, 2)) for r in ranked.results]
    print(f"{model}: {results} {ranked.total_tokens}")
