"""The optional captioner: text a detector cannot know (what a shot shows, who a person is,
the words of a line), asked of any OpenAI-compatible chat endpoint.

Configured by the environment, never required:

- ``MAVIN_CAPTIONER_URL``: the API base, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions``
  is appended); no credentials in the URL;
- ``MAVIN_CAPTIONER_MODEL``: the model name the endpoint serves;
- ``MAVIN_CAPTIONER_API_KEY``: optional bearer token.

The captioner sees the drafted script (times, speakers, people per shot, every field a
detector filled) and answers one JSON object::

    {"global": {"scene_description": "...", "global_style": "...", "global_audio": "..."},
     "shots": {"S1": "what the shot shows"}, "entities": {"P1": "who this is"},
     "lines": {"E1": "the words spoken"}}

Only fields whose provenance is ``detected`` and that hold free text are replaced, and each
one it fills is marked ``captioner``; times, ids and speakers stay the detectors'. A failing
or malformed answer leaves the draft as it was and says why on stderr (ingest goes on).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from mavin_ops.safety import check_url, redact_url

__all__ = ["Captioner", "captioner_from_env"]

_PROMPT = (
    "You write the text fields of an MTSS scene script for one video clip. You get the clip's drafted script as JSON: "
    "times, shots, the people a face detector saw, the speakers a voice model told apart, and placeholder text. Answer "
    "with one JSON object and nothing else, with the keys: global (scene_description, global_style, global_audio), "
    "shots (shot id -> visual description), entities (entity id -> short description), lines (dialogue event id -> "
    "the words spoken). Leave out anything you cannot tell."
)


@dataclass(frozen=True)
class Captioner:
    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0

    def ask(self, script: dict[str, Any]) -> dict[str, Any]:
        """The endpoint's answer for one drafted script (raises on any failure)."""
        import requests

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": _PROMPT}, {"role": "user", "content": json.dumps(script)}],
        }
        resp = requests.post(self.url.rstrip("/") + "/chat/completions", json=body, headers=headers, timeout=self.timeout_s)
        resp.raise_for_status()
        content = resp.json()["choices"][0]["message"]["content"]
        text = content.strip()
        if text.startswith("```"):  # a fenced answer
            text = text.strip("`").removeprefix("json").strip()
        answer = json.loads(text)
        if not isinstance(answer, dict):
            raise ValueError(f"expected a JSON object, got {type(answer).__name__}")
        return answer

    def fill(self, script: dict[str, Any], provenance: dict[str, str]) -> int:
        """Ask, then write the answer into the detected text fields of ``script`` in place and
        mark them ``captioner`` in ``provenance``. Returns how many fields it filled (0 after a
        failure, reported on stderr)."""
        try:
            answer = self.ask(script)
        except Exception as exc:  # noqa: BLE001 - the captioner is optional; any failure keeps the draft
            print(f"mavin-ops: warning: captioner {redact_url(self.url)} gave no usable answer for clip "
                  f"{script.get('clip_id')} ({exc.__class__.__name__}: {str(exc)[:200]}); keeping the detected text",
                  file=sys.stderr)
            return 0
        filled = 0

        def put(obj: dict[str, Any], key: str, path: str, value: Any) -> None:
            nonlocal filled
            if isinstance(value, str) and value.strip() and provenance.get(path) == "detected":
                obj[key] = value.strip()
                provenance[path] = "captioner"
                filled += 1

        glob = answer.get("global") if isinstance(answer.get("global"), dict) else {}
        for key in ("scene_description", "global_style", "global_audio"):
            put(script["global"], key, f"global.{key}", glob.get(key))
        shots = answer.get("shots") if isinstance(answer.get("shots"), dict) else {}
        for shot in script["shot"]:
            put(shot, "visual_description", f"shot[{shot['id']}].visual_description", shots.get(shot["id"]))
        ents = answer.get("entities") if isinstance(answer.get("entities"), dict) else {}
        for ent in script["reference"]:
            put(ent, "semantic_description", f"reference[{ent['id']}].semantic_description", ents.get(ent["id"]))
        lines = answer.get("lines") if isinstance(answer.get("lines"), dict) else {}
        for ev in script["event"]:
            put(ev, "line", f"event[{ev['id']}].line", lines.get(ev["id"]))
        return filled


def captioner_from_env(environ: dict[str, str] | None = None) -> Captioner | None:
    """The captioner the environment configures, or None when ``MAVIN_CAPTIONER_URL`` is unset."""
    env = os.environ if environ is None else environ
    url = env.get("MAVIN_CAPTIONER_URL", "").strip()
    if not url:
        return None
    check_url(url, "MAVIN_CAPTIONER_URL")
    model = env.get("MAVIN_CAPTIONER_MODEL", "").strip()
    if not model:
        raise ValueError("MAVIN_CAPTIONER_URL is set but MAVIN_CAPTIONER_MODEL is not; name the model the endpoint serves")
    return Captioner(url=url, model=model, api_key=env.get("MAVIN_CAPTIONER_API_KEY") or None)
