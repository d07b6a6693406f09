"""``GET /docs``: the OpenAPI schema rendered as one plain HTML page, with nothing loaded from a CDN
(FastAPI's own docs page fetches Swagger UI from the internet, which a closed network cannot reach).

Each endpoint shows its description, a table of the request body's fields (one per media type) and of every response
body's fields, and the schema's example as JSON.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

REF_PREFIX = "#/components/schemas/"


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        return components.get(ref[len(REF_PREFIX) :], {})
    return schema


def _type_name(schema: dict[str, Any], components: dict[str, Any]) -> str:
    """A short type: "integer", "array of integer | string", "GeneratedImage", "string | null"."""
    if "$ref" in schema:
        return schema["$ref"][len(REF_PREFIX) :]
    if "anyOf" in schema:
        return " | ".join(_type_name(option, components) for option in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if schema.get("type") == "array":
        return f"array of {_type_name(schema.get('items', {}), components)}"
    return str(schema.get("type", "any"))


def _constraints(schema: dict[str, Any]) -> str:
    options = [schema] + list(schema.get("anyOf", []))
    words = []
    for option in options:
        for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
            if key in option:
                value = option[key]
                words.append(f"{sign} {int(value) if float(value).is_integer() else value}")
    if "default" in schema:
        words.append(f"default {json.dumps(schema['default'])}")
    return ", ".join(words)


def _fields_table(schema: dict[str, Any], components: dict[str, Any]) -> str:
    schema = _resolve(schema, components)
    properties = schema.get("properties")
    if not properties:
        return f"<p>{escape(_type_name(schema, components))}</p>"
    required = set(schema.get("required", []))
    rows = []
    for name, field in properties.items():
        rows.append(
            f"<tr><td><code>{escape(name)}</code>{' *' if name in required else ''}</td>"
            f"<td>{escape(_type_name(field, components))}</td><td>{escape(_constraints(field))}</td>"
            f"<td>{escape(field.get('description', ''))}</td></tr>"
        )
    text = escape(schema.get("description", "").replace("``", ""))
    if schema.get("additionalProperties") is False and "Unknown fields" not in text:
        text += " Unknown fields are rejected."
    text = f"<p>{text} Fields marked * are required (request) or always present (response).</p>"
    table = "<table><tr><th>field</th><th>type</th><th>limits</th><th>meaning</th></tr>" + "".join(rows) + "</table>"
    examples = schema.get("examples")
    example = f"<p>Example:</p><pre>{escape(json.dumps(examples[0]))}</pre>" if examples else ""
    return text + table + example


def render_docs(openapi: dict[str, Any]) -> str:
    components = openapi.get("components", {}).get("schemas", {})
    info = openapi.get("info", {})
    sections = []
    for path, methods in openapi.get("paths", {}).items():
        for method, operation in methods.items():
            parts = [f"<h2><code>{escape(method.upper())} {escape(path)}</code> — {escape(operation.get('summary', ''))}</h2>"]
            if operation.get("description"):
                parts.append(f"<p>{escape(operation['description'])}</p>")
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                if content.get("schema"):  # /translate takes a multipart form or JSON: one table each
                    parts.append(f"<h3>Request body ({escape(media)})</h3>" + _fields_table(content["schema"], components))
            # Responses with the same body (the error statuses) are listed once.
            grouped: dict[str, list[str]] = {}
            bodies: dict[str, str] = {}
            for status, response in operation.get("responses", {}).items():
                for media, content in response.get("content", {}).items():
                    schema = content.get("schema")
                    key = media + json.dumps(schema, sort_keys=True)
                    grouped.setdefault(key, []).append(f"{status} {response.get('description', '')}")
                    bodies[key] = f" ({escape(media)})</h3>" + (_fields_table(schema, components) if schema else "")
            for key, statuses in grouped.items():
                parts.append(f"<h3>{escape(', '.join(statuses))}{bodies[key]}")
            sections.append("<section>" + "\n".join(parts) + "</section>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(info.get('title', 'API'))} — API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css"></head>
<body class="docs"><header><h1>{escape(info.get('title', 'API'))} <small>{escape(info.get('version', ''))}</small></h1>
<p>{escape(info.get('description', ''))} Machine-readable schema: <a href="/openapi.json">/openapi.json</a>.
Every error is <code>{{"error": "..."}}</code> with a 4xx status. <a href="/">Back to the page</a>.</p>
<pre>curl -s -X POST http://HOST:PORT/generate -H 'Content-Type: application/json' \\
     -d '{{"labels": [0, 1], "count": 4, "seed": 7}}' -o grid.png
curl -s -X POST http://HOST:PORT/translate -F image=@car.png -F edit=automobile:truck -o truck.png</pre></header>
<main>{''.join(sections)}</main></body></html>
"""


__all__ = ["render_docs"]
